//! Man pages and shell completions of the command-line programs, generated from their clap
//! definitions for the Debian package (`scripts/build-deb`), so they cannot drift from the
//! programs' real options.
//!
//! Each binary calls [`generate_if_requested`] first thing in `main`; with the environment
//! variable [`ASSETS_ENV`] set to a directory, the program writes its assets there and exits
//! instead of running.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write as _};
use std::path::Path;
use std::process::ExitCode;

use clap_complete::Shell;

/// The environment variable that asks a program for its assets: the output directory.
pub const ASSETS_ENV: &str = "PASSKEYD_GENERATE_ASSETS";

/// If [`ASSETS_ENV`] is set, writes the assets of the program `name` (the installed binary's
/// name, `env!("CARGO_BIN_NAME")`) described by `command` (see [`write_assets`]) and returns
/// the exit code to leave with; otherwise `None`, and the program runs as usual.
pub fn generate_if_requested(
    name: &str,
    command: impl FnOnce() -> clap::Command,
) -> Option<ExitCode> {
    let dir: OsString = std::env::var_os(ASSETS_ENV)?;
    Some(match write_assets(command(), name, Path::new(&dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "{name}: cannot write assets to {}: {error}",
                Path::new(&dir).display()
            );
            ExitCode::FAILURE
        }
    })
}

/// Writes `man/NAME.1` (section 1, with one page per subcommand as `NAME-SUB.1`) and the
/// completions `completions/NAME.bash`, `completions/_NAME` (zsh) and
/// `completions/NAME.fish` under `dir`, creating the directories. NAME is `name`, whatever
/// the command calls itself (clap defaults to the package's name).
pub fn write_assets(command: clap::Command, name: &str, dir: &Path) -> io::Result<()> {
    let man_dir = dir.join("man");
    let completions_dir = dir.join("completions");
    fs::create_dir_all(&man_dir)?;
    fs::create_dir_all(&completions_dir)?;

    let mut command = command.bin_name(name).display_name(name);
    command.build();
    write_man_pages(&command, &man_dir, name)?;

    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = BufWriter::new(File::create(completions_dir.join(file))?);
        clap_complete::generate(shell, &mut command, name, &mut out);
        out.flush()?;
    }
    Ok(())
}

/// One page for `command` as `page_name.1`, then one per visible subcommand.
fn write_man_pages(command: &clap::Command, dir: &Path, page_name: &str) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(dir.join(format!("{page_name}.1")))?);
    clap_mangen::Man::new(command.clone())
        .title(page_name.to_owned())
        .render(&mut out)?;
    out.flush()?;
    for sub in command.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_man_pages(sub, dir, &format!("{page_name}-{}", sub.get_name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> clap::Command {
        // Named like the package, as clap's derive does without `name`.
        clap::Command::new("samplepkg")
            .about("Sample client")
            .arg(
                clap::Arg::new("json")
                    .long("json")
                    .action(clap::ArgAction::SetTrue),
            )
            .subcommand(clap::Command::new("list").about("List keys"))
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn writes_pages_per_subcommand_and_three_completions() {
        let dir = tempfile::tempdir().unwrap();
        write_assets(sample(), "samplectl", dir.path()).unwrap();

        let mut pages: Vec<String> = fs::read_dir(dir.path().join("man"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        pages.sort();
        assert_eq!(pages, ["samplectl-list.1", "samplectl.1"]);
        let page = fs::read_to_string(dir.path().join("man/samplectl.1")).unwrap();
        assert!(page.starts_with(".ie \\n(.g .ds Aq \\(aq"), "{page}");
        assert!(page.contains(".TH samplectl 1"), "{page}");
        assert!(page.contains("\\-\\-json"), "{page}");
        let sub = fs::read_to_string(dir.path().join("man/samplectl-list.1")).unwrap();
        assert!(sub.contains(".TH samplectl-list 1"), "{sub}");
        assert!(sub.contains("List keys"), "{sub}");

        let bash = fs::read_to_string(dir.path().join("completions/samplectl.bash")).unwrap();
        assert!(bash.contains("complete -F _samplectl"), "{bash}");
        let zsh = fs::read_to_string(dir.path().join("completions/_samplectl")).unwrap();
        assert!(zsh.starts_with("#compdef samplectl"), "{zsh}");
        let fish = fs::read_to_string(dir.path().join("completions/samplectl.fish")).unwrap();
        assert!(fish.contains("complete -c samplectl"), "{fish}");
    }
}
