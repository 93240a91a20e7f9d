use super::*;

const LOGINID: &str = r#"
[loginid]
base_url = "https://app1.api.loginid.io"
app_id = "app1"
origin = "https://kiosk.example.com"
"#;

fn with(extra: &str) -> Result<Config, ConfigError> {
    Config::from_toml(&format!("{LOGINID}{extra}"))
}

fn parse_error(text: &str) -> (usize, usize, String) {
    match Config::from_toml(text) {
        Err(ConfigError::Parse {
            line,
            column,
            message,
        }) => (line, column, message),
        other => panic!("{text:?}: expected a parse error, got {other:?}"),
    }
}

#[test]
fn only_loginid_is_required_and_the_rest_defaults() {
    let config = with("").unwrap();
    assert_eq!(
        config.loginid.base_url.as_str(),
        "https://app1.api.loginid.io/"
    );
    assert_eq!(config.loginid.app_id, "app1");
    assert!(!config.loginid.allow_http_loopback);
    assert_eq!(
        config.ceremony.origin.as_str(),
        "https://kiosk.example.com/"
    );
    assert!(!config.ceremony.allow_loopback_origin);
    assert!(config.ceremony.verify_token);
    assert_eq!(config.ceremony.default_timeout, Duration::from_secs(300));
    assert_eq!(config.ceremony.min_timeout, Duration::from_secs(10));
    assert_eq!(config.ceremony.max_timeout, Duration::from_secs(600));
    assert_eq!(config.ceremony.complete_grace, Duration::from_secs(30));
    assert_eq!(config.usb, Some(UsbConfig::default()));
    assert_eq!(config.nfc, Some(NfcConfig::default()));
    assert_eq!(config.virtual_keys, None);
    assert_eq!(config.access, AccessConfig::default());
    assert_eq!(config.access.max_ceremonies_per_caller, 2);
    assert_eq!(config.access.max_ceremonies, 16);
}

#[test]
fn every_key_is_read() {
    let config = Config::from_toml(
        r#"
        [loginid]
        base_url = "http://127.0.0.1:8080"
        app_id = "rig"
        origin = "http://localhost:3000"
        allow_insecure_loopback = true
        verify_token = false

        [transports]
        usb = false
        nfc = true
        virtual_dir = "/run/passkeyd/virtual"
        usb_open_window_ms = 500
        nfc_first_retry_ms = 250
        nfc_max_retry_ms = 8000

        [access]
        allowed_users = ["kiosk", 1001]
        allowed_groups = ["passkeyd", 990]
        polkit = true
        max_ceremonies_per_caller = 1
        max_ceremonies = 4

        [timeouts]
        ceremony_default_s = 120
        ceremony_min_s = 5
        ceremony_max_s = 900
        complete_grace_s = 45
        "#,
    )
    .unwrap();
    assert_eq!(config.loginid.base_url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(config.loginid.app_id, "rig");
    assert!(config.loginid.allow_http_loopback);
    assert!(config.ceremony.allow_loopback_origin);
    assert!(!config.ceremony.verify_token);
    assert_eq!(config.usb, None);
    let nfc = config.nfc.unwrap();
    assert_eq!(nfc.first_retry, Duration::from_millis(250));
    assert_eq!(nfc.max_retry, Duration::from_secs(8));
    assert_eq!(
        config.virtual_keys,
        Some(VirtualConfig {
            dir: PathBuf::from("/run/passkeyd/virtual")
        })
    );
    assert_eq!(
        config.access,
        AccessConfig {
            allowed_users: vec![Principal::Name("kiosk".into()), Principal::Id(1001)],
            allowed_groups: vec![Principal::Name("passkeyd".into()), Principal::Id(990)],
            polkit: true,
            max_ceremonies_per_caller: 1,
            max_ceremonies: 4,
        }
    );
    assert_eq!(config.ceremony.default_timeout, Duration::from_secs(120));
    assert_eq!(config.ceremony.min_timeout, Duration::from_secs(5));
    assert_eq!(config.ceremony.max_timeout, Duration::from_secs(900));
    assert_eq!(config.ceremony.complete_grace, Duration::from_secs(45));

    let usb = with("[transports]\nusb_open_window_ms = 750\n")
        .unwrap()
        .usb
        .unwrap();
    assert_eq!(usb.open_window, Duration::from_millis(750));
    assert_eq!(usb.sysfs_root, PathBuf::from("/sys"));
}

#[test]
fn a_missing_loginid_key_is_named() {
    let (line, _, message) = parse_error("[transports]\nusb = false\n");
    assert_eq!(line, 1);
    assert!(message.contains("missing field `loginid`"), "{message}");
    for key in ["base_url", "app_id", "origin"] {
        let text: String = LOGINID
            .lines()
            .filter(|line| !line.starts_with(key))
            .map(|line| format!("{line}\n"))
            .collect();
        let (_, _, message) = parse_error(&text);
        assert!(
            message.contains(&format!("missing field `{key}`")),
            "{message}"
        );
    }
}

#[test]
fn unknown_keys_and_sections_are_errors() {
    for extra in [
        "[transports]\nusb_enabled = false\n",
        "[bluetooth]\nenabled = true\n",
        "log_level = \"debug\"\n",
        "[access]\nallowed_user = [\"kiosk\"]\n",
        "[timeouts]\nceremony_s = 3\n",
    ] {
        let error = with(extra).unwrap_err();
        assert!(
            matches!(error, ConfigError::Parse { .. }),
            "{extra:?}: {error:?}"
        );
    }
    // The old layout is refused with a clear message, not half-read.
    let (_, _, message) = parse_error(&format!("{LOGINID}[usb]\nenabled = false\n"));
    assert!(message.contains("unknown field `usb`"), "{message}");
}

#[test]
fn parse_errors_are_one_line_with_the_position() {
    let text = format!("{LOGINID}[transports]\n  usb_enable = false\n");
    let (line, column, message) = parse_error(&text);
    assert_eq!((line, column), (7, 3));
    assert!(
        message.starts_with("unknown field `usb_enable`"),
        "{message}"
    );
    let shown = with("[transports]\n  usb_enable = false\n")
        .unwrap_err()
        .to_string();
    assert!(!shown.contains('\n'), "{shown}");
    assert!(
        shown.starts_with("invalid configuration at line 7, column 3: unknown field"),
        "{shown}"
    );
    // Columns count characters, not bytes.
    let (line, column, _) = parse_error(&format!("{LOGINID}[transports]\nvirtual_dir = \"é\" x\n"));
    assert_eq!((line, column), (7, 19));
}

#[test]
fn wrong_types_and_bad_values_are_errors() {
    for extra in [
        "[transports]\nusb = \"no\"\n",
        "[transports]\nnfc_first_retry_ms = -1\n",
        "[transports]\nnfc_max_retry_ms = 1.5\n",
        "[transports]\nvirtual_dir = 3\n",
        "[access]\nallowed_users = \"kiosk\"\n",
        "[access]\nallowed_groups = [-1]\n",
        "[access]\nmax_ceremonies = -2\n",
        "[timeouts]\nceremony_default_s = \"5m\"\n",
        "[transports\n",
    ] {
        let error = with(extra).unwrap_err();
        assert!(
            matches!(error, ConfigError::Parse { .. }),
            "{extra:?}: {error:?}"
        );
    }
    for (base_url, origin) in [
        ("not a url", "https://kiosk.example.com"),
        ("https://app1.api.loginid.io", "kiosk.example.com"),
    ] {
        let text = format!(
            "[loginid]\nbase_url = \"{base_url}\"\napp_id = \"a\"\norigin = \"{origin}\"\n"
        );
        let (_, _, message) = parse_error(&text);
        assert!(
            message.contains("relative URL") || message.contains("invalid"),
            "{message}"
        );
    }
}

#[test]
fn ranges_are_checked() {
    let invalid = |extra: &str| match with(extra) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("{extra:?}: expected Invalid, got {other:?}"),
    };
    assert_eq!(
        invalid("[transports]\nnfc_first_retry_ms = 0\n"),
        "transports.nfc_first_retry_ms"
    );
    assert_eq!(
        invalid("[transports]\nusb_open_window_ms = 0\n"),
        "transports.usb_open_window_ms"
    );
    assert_eq!(
        invalid("[timeouts]\nceremony_min_s = 0\n"),
        "timeouts.ceremony_min_s"
    );
    assert_eq!(
        invalid("[timeouts]\nceremony_max_s = 86401\n"),
        "timeouts.ceremony_max_s"
    );
    assert_eq!(
        invalid("[timeouts]\ncomplete_grace_s = 0\n"),
        "timeouts.complete_grace_s"
    );
    assert_eq!(
        invalid("[access]\nmax_ceremonies = 0\n"),
        "access.max_ceremonies"
    );
    assert_eq!(
        invalid("[access]\nmax_ceremonies = 2\nmax_ceremonies_per_caller = 3\n"),
        "access.max_ceremonies_per_caller"
    );
    let text = LOGINID.replace("app_id = \"app1\"", "app_id = \"  \"");
    assert!(matches!(
        Config::from_toml(&text),
        Err(ConfigError::Invalid {
            key: "loginid.app_id",
            ..
        })
    ));
    assert!(matches!(
        with("[transports]\nnfc_first_retry_ms = 2000\nnfc_max_retry_ms = 1000\n"),
        Err(ConfigError::NfcRetryOrder {
            first_ms: 2000,
            max_ms: 1000
        })
    ));
    // Only the first pause given: it must not exceed the default maximum (60 s).
    assert!(matches!(
        with("[transports]\nnfc_first_retry_ms = 61000\n"),
        Err(ConfigError::NfcRetryOrder {
            first_ms: 61000,
            max_ms: 60000
        })
    ));
    assert!(matches!(
        with("[timeouts]\nceremony_default_s = 700\n"),
        Err(ConfigError::TimeoutOrder {
            min: 10,
            default: 700,
            max: 600
        })
    ));
    // A disabled transport's settings are checked all the same: they are in the file.
    assert!(with("[transports]\nnfc = false\nnfc_first_retry_ms = 0\n").is_err());
}

#[test]
fn names_resolve_and_unknown_ones_are_errors() {
    let access = AccessConfig {
        allowed_users: vec![Principal::Name("root".into()), Principal::Id(4242)],
        allowed_groups: vec![Principal::Name("root".into()), Principal::Id(4343)],
        ..AccessConfig::default()
    };
    assert_eq!(
        access.resolve().unwrap(),
        ResolvedAccess {
            uids: vec![0, 4242],
            gids: vec![0, 4343],
        }
    );
    let unknown_user = AccessConfig {
        allowed_users: vec![Principal::Name("no-such-user-passkeyd".into())],
        ..AccessConfig::default()
    };
    assert!(matches!(
        unknown_user.resolve(),
        Err(ConfigError::UnknownUser(name)) if name == "no-such-user-passkeyd"
    ));
    let unknown_group = AccessConfig {
        allowed_groups: vec![Principal::Name("no-such-group-passkeyd".into())],
        ..AccessConfig::default()
    };
    assert!(matches!(
        unknown_group.resolve(),
        Err(ConfigError::UnknownGroup(name)) if name == "no-such-group-passkeyd"
    ));
}

#[test]
fn load_reports_the_missing_file_and_reads_a_present_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let error = Config::load(&path).unwrap_err();
    let ConfigError::Read {
        path: named,
        source,
    } = error
    else {
        panic!("expected Read, got {error:?}");
    };
    assert_eq!(named, path);
    assert_eq!(source.kind(), io::ErrorKind::NotFound);

    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("{LOGINID}[transports]\nusb = false\n")).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.usb, None);
    assert_eq!(config.nfc, Some(NfcConfig::default()));
}
