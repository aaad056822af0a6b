//! Reading a config file: TOML, then `PREFIX*` environment overrides.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::ConfigError;

/// Parses TOML from `path`, then applies `prefix*` variables from `vars` as overrides.
pub fn load_toml<T: DeserializeOwned>(
    path: &Path,
    prefix: &str,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?;
    for (var, value) in vars {
        if let Some(rest) = var.strip_prefix(prefix) {
            apply_override(&mut table, &var, rest, &value)?;
        }
    }
    T::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
        path: shown,
        message: e.to_string(),
    })
}

fn apply_override(
    table: &mut toml::Table,
    var: &str,
    path: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
    let Some((last, parents)) = keys.split_last() else {
        return Ok(());
    };
    if keys.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            message: "empty field name".into(),
        });
    }
    let mut node = table;
    for key in parents {
        let entry = node
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Env {
                    var: var.to_owned(),
                    message: format!("`{key}` is not a table"),
                })
            }
        };
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    node.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::PathBuf;

    use serde::Deserialize;

    use super::super::RaftSettings;
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        name: String,
        raft: RaftSettings,
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("c.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn environment_overrides_nested_fields_with_typed_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "name = \"a\"\n[raft]\nheartbeat_interval_ms = 100\n",
        );
        let vars = vec![
            (
                "X_RAFT__HEARTBEAT_INTERVAL_MS".to_string(),
                "42".to_string(),
            ),
            ("X_NAME".to_string(), "from env".to_string()),
            ("OTHER".to_string(), "ignored".to_string()),
        ];
        let s: Sample = load_toml(&p, "X_", vars.into_iter()).unwrap();
        assert_eq!(s.raft.heartbeat_interval_ms, 42);
        assert_eq!(s.name, "from env");
    }

    #[test]
    fn unknown_field_is_a_parse_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "name = \"a\"\n[raft]\nheartbeat_ms = 1\n");
        let err = load_toml::<Sample>(&p, "X_", std::iter::empty()).unwrap_err();
        assert!(err.to_string().contains("heartbeat_ms"), "{err}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = load_toml::<Sample>(Path::new("/nonexistent/c.toml"), "X_", std::iter::empty())
            .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}
