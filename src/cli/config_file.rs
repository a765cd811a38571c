//! `stoker serve`'s configuration: flags, then `STOKER_*` environment, then
//! a TOML file (`--config FILE` or `STOKER_CONFIG`), then defaults, in that
//! order of precedence; `stoker config show` prints the effective values and
//! where each came from.
//!
//! clap parses flags, so the file and the environment become flags before
//! it runs: each file key or `STOKER_<FLAG>` variable whose flag the command
//! line does not give is added as that flag. One parser, one set of
//! validation messages, whatever the source.
//!
//! ```toml
//! socket = "/run/stoker/stoker.sock"   # any flag of `stoker serve`, by its long name
//! ring-memory = "16GiB"                # - or _ alike
//! allow-url = ["s3://training-data/*"] # repeatable flags take arrays
//! [store]                              # --store-opt KEY=VALUE
//! aws_endpoint = "https://s3.us-west-004.backblazeb2.com"
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
    Unset,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env => "env",
            Source::Flag => "flag",
            Source::Unset => "unset",
        }
    }
}

/// The largest configuration file read (a config is a few KiB).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The flags the file and the environment add, by arg id, with their source.
pub type Added = BTreeMap<String, Source>;

/// The subcommands that read a configuration: their path in argv.
const CONFIGURED: &[&[&str]] = &[&["serve"], &["config", "show"]];

/// Adds the file's and the environment's settings to `argv` as flags. A
/// command that reads no configuration comes back unchanged.
pub fn apply(
    argv: Vec<OsString>,
    root: &Command,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<OsString>, Added), String> {
    let words: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    // The subcommand: the first word not a global flag or its value.
    let Some((at, path)) = CONFIGURED.iter().find_map(|path| {
        let start = first_positional(&words)?;
        let found = words.get(start..start + path.len())?;
        (found.iter().map(String::as_str).eq(path.iter().copied()))
            .then_some((start + path.len(), *path))
    }) else {
        return Ok((argv, Added::new()));
    };
    let mut cmd = root.clone();
    for name in path {
        cmd = cmd.find_subcommand(name).cloned().ok_or_else(|| format!("no subcommand {name}"))?;
    }
    let given = |long: &str| {
        words[at..]
            .iter()
            .any(|w| w == &format!("--{long}") || w.starts_with(&format!("--{long}=")))
    };
    let file = config_path(&words[at..], env);
    let table = match &file {
        Some(path) => read_table(Path::new(path))?,
        None => toml::Table::new(),
    };
    let mut added = Added::new();
    let mut extra: Vec<OsString> = Vec::new();
    // The environment: STOKER_<FLAG> for every flag clap reads no variable for.
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "config" || arg.get_env().is_some() || given(long) {
            continue;
        }
        let var = format!("STOKER_{}", long.to_uppercase().replace('-', "_"));
        if let Some(value) = env(&var) {
            let values: Vec<String> = if multiple(arg) {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(String::from)
                    .collect()
            } else {
                vec![value]
            };
            push_flag(
                &mut extra,
                arg,
                long,
                &values.into_iter().map(toml::Value::String).collect::<Vec<_>>(),
            )
            .map_err(|e| format!("{var}: {e}"))?;
            added.insert(arg.get_id().to_string(), Source::Env);
        }
    }
    let shown = file.as_deref().unwrap_or_default();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let (long, values) = match (long.as_str(), value) {
            // [store] aws_endpoint = "…" is --store-opt aws_endpoint=….
            ("store" | "store-opt", toml::Value::Table(t)) => (
                "store-opt".to_string(),
                t.iter()
                    .map(|(k, v)| Ok(toml::Value::String(format!("{k}={}", scalar(v)?))))
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(|e| format!("{shown}: [{key}]: {e}"))?,
            ),
            (_, toml::Value::Array(items)) => (long, items.clone()),
            _ => (long, vec![value.clone()]),
        };
        let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(long.as_str())) else {
            let known: Vec<&str> = cmd
                .get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|l| !matches!(*l, "config" | "help" | "version"))
                .collect();
            return Err(format!(
                "{shown}: unknown setting '{key}' (settings are the flags of `stoker serve`: {})",
                known.join(", ")
            ));
        };
        let id = arg.get_id().to_string();
        let from_env = arg.get_env().is_some_and(|v| env(&v.to_string_lossy()).is_some())
            || added.get(&id) == Some(&Source::Env);
        if given(&long) || from_env {
            continue;
        }
        push_flag(&mut extra, arg, &long, &values).map_err(|e| format!("{shown}: {key}: {e}"))?;
        added.insert(id, Source::File);
    }
    let mut out = argv;
    let tail = out.split_off(at);
    out.extend(extra);
    out.extend(tail);
    Ok((out, added))
}

/// For a parse error about a value the file or the environment supplied:
/// where it came from (`None`: the user typed it, or no value is named).
pub fn origin_of(e: &clap::Error, root: &Command, added: &Added) -> Option<String> {
    let named = match e.get(clap::error::ContextKind::InvalidArg)? {
        clap::error::ContextValue::String(s) => s.clone(),
        _ => return None,
    };
    // "--slots <SLOTS>" names the flag by its long form.
    let long = named.strip_prefix("--")?.split([' ', '=']).next()?.to_string();
    let id = CONFIGURED.iter().find_map(|path| {
        let mut cmd = root;
        for name in *path {
            cmd = cmd.find_subcommand(name)?;
        }
        let arg = cmd.get_arguments().find(|a| a.get_long() == Some(long.as_str()))?;
        Some(arg.get_id().to_string())
    })?;
    match added.get(&id)? {
        Source::File => Some(format!(
            "the value of '{long}' came from the config file (--config or STOKER_CONFIG)"
        )),
        Source::Env => Some(format!(
            "the value of --{long} came from the environment: STOKER_{}",
            long.to_uppercase().replace('-', "_")
        )),
        _ => None,
    }
}

/// Index of the first word that is not the program or a global flag.
fn first_positional(words: &[String]) -> Option<usize> {
    let mut i = 1;
    while let Some(w) = words.get(i) {
        if w == "--log-format" {
            i += 2;
        } else if w.starts_with('-') {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}

/// `--config FILE`, `--config=FILE`, or STOKER_CONFIG.
fn config_path(words: &[String], env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if w == "--config" {
            return it.next().cloned();
        }
        if let Some(path) = w.strip_prefix("--config=") {
            return Some(path.to_string());
        }
    }
    env("STOKER_CONFIG").filter(|p| !p.is_empty())
}

fn read_table(path: &Path) -> Result<toml::Table, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("reading the config {shown}: {e}"))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("{shown} is {} bytes; a config is at most 1 MiB", meta.len()));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading the config {shown}: {e}"))?;
    text.parse::<toml::Table>().map_err(|e| format!("{shown}: {e}"))
}

fn multiple(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), clap::ArgAction::Append)
}

fn scalar(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("expected a string, number or boolean, got {}", other.type_str())),
    }
}

/// Adds `--long=value` (once per value for a repeatable flag; a bare
/// `--long` for a switch set true).
fn push_flag(
    out: &mut Vec<OsString>,
    arg: &clap::Arg,
    long: &str,
    values: &[toml::Value],
) -> Result<(), String> {
    let switch = !arg.get_action().takes_values();
    if values.len() > 1 && !multiple(arg) {
        return Err("takes one value, not a list".into());
    }
    for v in values {
        if switch {
            let on = match v {
                toml::Value::Boolean(b) => *b,
                toml::Value::String(s) => {
                    s.parse::<bool>().map_err(|_| format!("expected true or false, got '{s}'"))?
                }
                other => return Err(format!("expected true or false, got {}", other.type_str())),
            };
            if on {
                out.push(format!("--{long}").into());
            }
        } else {
            out.push(format!("--{long}={}", scalar(v)?).into());
        }
    }
    Ok(())
}

/// Each setting of a parsed command: (flag, value, source), for `config show`.
pub fn effective(
    cmd: &Command,
    matches: &ArgMatches,
    added: &Added,
) -> Vec<(String, String, Source)> {
    let mut rows = Vec::new();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version" | "config") {
            continue;
        }
        let id = arg.get_id().as_str();
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match (added.get(id), matches.value_source(id)) {
            (Some(s), _) => *s,
            (None, Some(ValueSource::CommandLine)) => Source::Flag,
            (None, Some(ValueSource::EnvVariable)) => Source::Env,
            (None, Some(ValueSource::DefaultValue)) => Source::Default,
            _ => Source::Unset,
        };
        let value = match (values.is_empty(), arg.get_action().takes_values()) {
            (true, _) => "-".to_string(),
            (false, true) => values.join(", "),
            (false, false) => "true".to_string(),
        };
        let value = if long == "store-opt" { redact_store_opts(&values) } else { value };
        rows.push((long.to_string(), value, source));
    }
    rows
}

/// Store options may hold secrets (access keys, SAS tokens): their keys
/// are shown, their values only when they plainly are not secret.
fn redact_store_opts(values: &[String]) -> String {
    if values.is_empty() {
        return "-".into();
    }
    values
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if k.contains("endpoint") || k.contains("region") => {
                format!("{k}={}", crate::echo::redacted_url(v))
            }
            Some((k, _)) => format!("{k}=<redacted>"),
            None => "<redacted>".into(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    /// Parses `stoker serve <flags>` with `file` as --config and `vars` as
    /// the environment; returns each setting's (value, source).
    fn settings(
        file: &str,
        flags: &[&str],
        vars: &[(&str, &str)],
    ) -> Result<BTreeMap<String, (String, Source)>, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("stoker.toml");
        std::fs::write(&path, file).map_err(|e| e.to_string())?;
        let mut argv: Vec<OsString> = vec!["stoker".into(), "config".into(), "show".into()];
        argv.push(format!("--config={}", path.display()).into());
        argv.extend(flags.iter().map(OsString::from));
        let vars: BTreeMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let env = move |k: &str| vars.get(k).cloned();
        let root = Cli::command();
        let (argv, added) = apply(argv, &root, &env)?;
        let matches = root.clone().try_get_matches_from(argv).map_err(|e| e.to_string())?;
        let show = matches.subcommand_matches("config").and_then(|m| m.subcommand_matches("show"));
        let cmd = root.find_subcommand("config").and_then(|c| c.find_subcommand("show"));
        let (Some(m), Some(cmd)) = (show, cmd) else { return Err("no config show".into()) };
        Ok(effective(cmd, m, &added).into_iter().map(|(k, v, s)| (k, (v, s))).collect())
    }

    fn get(s: &BTreeMap<String, (String, Source)>, key: &str) -> (String, Source) {
        s.get(key).cloned().unwrap_or_else(|| panic!("no setting {key}"))
    }

    #[test]
    fn flags_beat_environment_beats_file_beats_defaults() {
        let file = "slots = 4\nprefetch = 5\nring_memory = \"16GiB\"\ndrain-secs = 3.5\n";
        let s = settings(file, &["--slots", "9"], &[("STOKER_PREFETCH", "7")]).expect("valid");
        assert_eq!(get(&s, "slots"), ("9".into(), Source::Flag));
        assert_eq!(get(&s, "prefetch"), ("7".into(), Source::Env));
        assert_eq!(get(&s, "ring-memory"), ("16GiB".into(), Source::File));
        assert_eq!(get(&s, "drain-secs"), ("3.5".into(), Source::File));
        assert_eq!(get(&s, "ring-bytes"), ("256MiB".into(), Source::Default));
        assert_eq!(get(&s, "tcp").1, Source::Unset);
    }

    #[test]
    fn lists_tables_and_redaction() {
        let file = "allow-url = [\"s3://a/*\", \"s3://b/*\"]\n[store]\naws_endpoint = \"http://minio:9000\"\naws_secret_access_key = \"hunter2\"\n";
        let s = settings(file, &[], &[]).expect("valid");
        assert_eq!(get(&s, "allow-url"), ("s3://a/*, s3://b/*".into(), Source::File));
        let (opts, source) = get(&s, "store-opt");
        assert_eq!(source, Source::File);
        assert!(opts.contains("aws_endpoint=http://minio:9000"), "{opts}");
        assert!(!opts.contains("hunter2"), "{opts}");
        let s = settings("", &[], &[("STOKER_ALLOW_URL", "s3://x/*, s3://y/*")]).expect("valid");
        assert_eq!(get(&s, "allow-url"), ("s3://x/*, s3://y/*".into(), Source::Env));
    }

    #[test]
    fn bad_files_are_named_errors() {
        let unknown = settings("bogus = 1\n", &[], &[]).expect_err("unknown key");
        assert!(
            unknown.contains("unknown setting 'bogus'") && unknown.contains("ring-memory"),
            "{unknown}"
        );
        let list = settings("slots = [1, 2]\n", &[], &[]).expect_err("a list for one value");
        assert!(list.contains("slots") && list.contains("one value"), "{list}");
        let syntax = settings("slots = \n", &[], &[]).expect_err("bad TOML");
        assert!(syntax.contains("stoker.toml"), "{syntax}");
        let value = settings("slots = \"many\"\n", &[], &[]).expect_err("clap refuses it");
        assert!(value.contains("--slots"), "{value}");
        let nested = settings("[store]\nx = [1]\n", &[], &[]).expect_err("nested");
        assert!(nested.contains("[store]"), "{nested}");
    }

    #[test]
    fn a_bad_value_says_where_it_came_from() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stoker.toml");
        std::fs::write(&path, "slots = \"many\"\n").expect("write");
        let root = Cli::command();
        let argv: Vec<OsString> =
            vec!["stoker".into(), "serve".into(), format!("--config={}", path.display()).into()];
        let no_env = |_: &str| None;
        let (file_argv, added) = apply(argv.clone(), &root, &no_env).expect("the file reads");
        let e = root.clone().try_get_matches_from(&file_argv).expect_err("'many' is no number");
        let why = origin_of(&e, &root, &added).expect("a value from the file");
        assert!(why.contains("config file") && why.contains("slots"), "{why}");
        let env = |k: &str| (k == "STOKER_PREFETCH").then(|| "x".to_string());
        let (env_argv, added) = apply(argv, &root, &env).expect("the file reads");
        let e = root.clone().try_get_matches_from(&env_argv).expect_err("'x' is no number");
        let why = origin_of(&e, &root, &added).expect("a value from the environment");
        assert!(why.contains("STOKER_PREFETCH"), "{why}");
        // Typed by the user: nothing to add.
        let typed: Vec<OsString> =
            ["stoker", "serve", "--slots", "many"].iter().map(OsString::from).collect();
        let e = root.clone().try_get_matches_from(typed).expect_err("'many' is no number");
        assert_eq!(origin_of(&e, &root, &Added::new()), None);
    }

    #[test]
    fn other_commands_are_untouched() {
        let root = Cli::command();
        let argv: Vec<OsString> =
            ["stoker", "bench", "--json"].iter().map(OsString::from).collect();
        let env = |_: &str| Some("/nonexistent.toml".to_string());
        let (out, added) = apply(argv.clone(), &root, &env).expect("no config read");
        assert_eq!(out, argv);
        assert!(added.is_empty());
    }
}
