//! The terminal side of `register`: the status line (a spinner on a terminal, plain lines
//! otherwise, always on stderr) and PIN prompts without echo.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal as _};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rustix::termios::{OptionalActions, Termios, tcgetattr, tcsetattr};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

/// Whether a person is there to type a PIN: stdin and stderr are a terminal.
pub(crate) fn interactive() -> bool {
    io::stdin().is_terminal() && io::stderr().is_terminal()
}

/// The status of the ceremony on stderr.
pub(crate) struct Status {
    spinner: Option<ProgressBar>,
    terminal: bool,
    last: Option<String>,
}

impl Status {
    pub(crate) fn new() -> Self {
        Self {
            spinner: None,
            terminal: io::stderr().is_terminal(),
            last: None,
        }
    }

    /// Shows `text`: as the spinner's message on a terminal, as a line otherwise.
    pub(crate) fn show(&mut self, text: &str) {
        if self.last.as_deref() == Some(text) && (self.spinner.is_some() || !self.terminal) {
            return;
        }
        self.last = Some(text.to_owned());
        if !self.terminal {
            eprintln!("passkeyctl: {text}");
            return;
        }
        let spinner = self.spinner.get_or_insert_with(|| {
            let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                spinner.set_style(style);
            }
            spinner.enable_steady_tick(Duration::from_millis(120));
            spinner
        });
        spinner.set_message(text.to_owned());
    }

    /// Removes the spinner (before a prompt, and at the end).
    pub(crate) fn clear(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A PIN being typed, on a blocking thread (the terminal read cannot be awaited).
pub(crate) struct Prompt {
    task: Option<JoinHandle<io::Result<Zeroizing<String>>>>,
    /// The terminal and its settings before the prompt turned echo off, to put back when the
    /// prompt is abandoned: the blocked read never returns to do it itself.
    saved: Option<(File, Termios)>,
}

impl Prompt {
    fn spawn(ask: impl FnOnce() -> io::Result<Zeroizing<String>> + Send + 'static) -> Self {
        let saved = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .ok()
            .and_then(|tty| tcgetattr(&tty).ok().map(|termios| (tty, termios)));
        Self {
            task: Some(tokio::task::spawn_blocking(ask)),
            saved,
        }
    }

    /// Asks for the key's PIN.
    pub(crate) fn pin(prompt: String) -> Self {
        Self::spawn(move || rpassword::prompt_password(prompt).map(Zeroizing::new))
    }

    /// Asks for a new PIN twice until both agree and it is long enough.
    pub(crate) fn new_pin(key: String, min_length: u32) -> Self {
        Self::spawn(move || {
            eprintln!(
                "The key {key} has no PIN yet and this registration needs one. Choose a PIN of \
                 at least {min_length} characters."
            );
            loop {
                let first = Zeroizing::new(rpassword::prompt_password("New PIN: ")?);
                if u32::try_from(first.chars().count()).unwrap_or(u32::MAX) < min_length {
                    eprintln!("Too short: at least {min_length} characters.");
                    continue;
                }
                let second = Zeroizing::new(rpassword::prompt_password("Repeat the new PIN: ")?);
                if first == second {
                    return Ok(first);
                }
                eprintln!("The two PINs differ; again.");
            }
        })
    }

    /// The PIN typed; pending forever once taken.
    pub(crate) async fn answer(&mut self) -> io::Result<Zeroizing<String>> {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let result = task.await;
        self.task = None;
        self.saved = None;
        match result {
            Ok(answer) => answer,
            Err(error) => Err(io::Error::other(error)),
        }
    }

    /// Whether the prompt waits for the user.
    pub(crate) fn is_open(&self) -> bool {
        self.task.is_some()
    }
}

impl Drop for Prompt {
    fn drop(&mut self) {
        if self.task.take().is_some()
            && let Some((tty, termios)) = self.saved.take()
        {
            // Echo back on; the thread stays blocked on the terminal until the process exits.
            let _ = tcsetattr(&tty, OptionalActions::Now, &termios);
            eprintln!();
        }
    }
}
