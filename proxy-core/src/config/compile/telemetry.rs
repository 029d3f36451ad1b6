//! `[telemetry]`, `[telemetry.prometheus]` and `[telemetry.loki]`: what is pushed to the
//! homelab, where, and how.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{is_valid_dns_name, Compiler};
use crate::config::error::KeyPath;
use crate::config::file::{
    TelemetryLokiSection, TelemetryPrometheusSection, TelemetrySection, DEFAULT_LOKI_BATCH_SIZE,
    DEFAULT_LOKI_BUFFER, DEFAULT_LOKI_LABELS, DEFAULT_LOKI_MAX_WAIT, DEFAULT_REMOTE_WRITE_BUFFER,
    DEFAULT_REMOTE_WRITE_INTERVAL, DEFAULT_TELEMETRY_MAX_BACKOFF, DEFAULT_TELEMETRY_MIN_BACKOFF,
    DEFAULT_TELEMETRY_TIMEOUT, DEFAULT_TELEMETRY_VERIFY,
};
use crate::telemetry::{Auth, Endpoint, LokiSettings, RemoteWriteSettings, TelemetrySettings};

/// Loki's default `max_label_names_per_series`: a stream with more labels is refused.
const MAX_STREAM_LABELS: usize = 15;

/// The keys every receiver has, borrowed from either sink's section.
struct ReceiverKeys<'s> {
    url: &'s str,
    url_key: &'static str,
    timeout: Option<&'s str>,
    bearer_token_env: Option<&'s str>,
    basic_auth_user: Option<&'s str>,
    basic_auth_password_env: Option<&'s str>,
    ca_file: Option<&'s str>,
    verify: Option<bool>,
}

impl Compiler<'_> {
    /// `metrics`: whether `[admin] metrics` records any (remote write pushes them).
    pub(super) fn telemetry(
        &mut self,
        t: &TelemetrySection,
        metrics: bool,
        key: &KeyPath,
    ) -> TelemetrySettings {
        let labels = match &t.labels {
            Some(labels) => self.labels(labels, &key.key("labels")),
            None => default_labels(),
        };
        let min_backoff = self.positive_duration(
            t.min_backoff.as_deref(),
            DEFAULT_TELEMETRY_MIN_BACKOFF,
            key.key("min_backoff"),
        );
        let max_backoff = self.positive_duration(
            t.max_backoff.as_deref(),
            DEFAULT_TELEMETRY_MAX_BACKOFF,
            key.key("max_backoff"),
        );
        if min_backoff > max_backoff {
            self.problem(
                key.key("min_backoff"),
                "min_backoff is longer than max_backoff",
            );
        }
        if t.prometheus.is_some() && !metrics {
            self.problem(
                key.key("prometheus"),
                "pushes the metrics, which `[admin] metrics = false` turns off",
            );
        }
        let prometheus = t
            .prometheus
            .as_ref()
            .and_then(|p| self.remote_write(p, &key.key("prometheus")));
        let loki = t
            .loki
            .as_ref()
            .and_then(|l| self.loki(l, &labels, &key.key("loki")));
        TelemetrySettings {
            labels,
            min_backoff,
            max_backoff,
            prometheus,
            loki,
        }
    }

    fn remote_write(
        &mut self,
        p: &TelemetryPrometheusSection,
        key: &KeyPath,
    ) -> Option<RemoteWriteSettings> {
        let interval = self.positive_duration(
            p.interval.as_deref(),
            DEFAULT_REMOTE_WRITE_INTERVAL,
            key.key("interval"),
        );
        let buffer = self.at_least_one(p.buffer, DEFAULT_REMOTE_WRITE_BUFFER, key.key("buffer"));
        let endpoint = self.receiver(
            ReceiverKeys {
                url: &p.remote_write,
                url_key: "remote_write",
                timeout: p.timeout.as_deref(),
                bearer_token_env: p.bearer_token_env.as_deref(),
                basic_auth_user: p.basic_auth_user.as_deref(),
                basic_auth_password_env: p.basic_auth_password_env.as_deref(),
                ca_file: p.ca_file.as_deref(),
                verify: p.verify,
            },
            key,
        )?;
        Some(RemoteWriteSettings {
            endpoint,
            interval,
            buffer,
        })
    }

    fn loki(
        &mut self,
        l: &TelemetryLokiSection,
        shared: &[(String, String)],
        key: &KeyPath,
    ) -> Option<LokiSettings> {
        let own = match &l.labels {
            Some(labels) => self.labels(labels, &key.key("labels")),
            None => DEFAULT_LOKI_LABELS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        // The sink's own labels win over `[telemetry] labels` of the same name.
        let mut merged: BTreeMap<String, String> = shared.iter().cloned().collect();
        merged.extend(own);
        if merged.len() > MAX_STREAM_LABELS {
            self.problem(
                key.key("labels"),
                format!(
                    "{} stream labels (with [telemetry] labels): Loki refuses more than {MAX_STREAM_LABELS}; keep them few and fixed",
                    merged.len()
                ),
            );
        }
        let batch_size =
            self.at_least_one(l.batch_size, DEFAULT_LOKI_BATCH_SIZE, key.key("batch_size"));
        let max_wait = self.positive_duration(
            l.max_wait.as_deref(),
            DEFAULT_LOKI_MAX_WAIT,
            key.key("max_wait"),
        );
        let buffer = self.at_least_one(l.buffer, DEFAULT_LOKI_BUFFER, key.key("buffer"));
        let endpoint = self.receiver(
            ReceiverKeys {
                url: &l.url,
                url_key: "url",
                timeout: l.timeout.as_deref(),
                bearer_token_env: l.bearer_token_env.as_deref(),
                basic_auth_user: l.basic_auth_user.as_deref(),
                basic_auth_password_env: l.basic_auth_password_env.as_deref(),
                ca_file: l.ca_file.as_deref(),
                verify: l.verify,
            },
            key,
        )?;
        Some(LokiSettings {
            endpoint,
            labels: merged.into_iter().collect(),
            batch_size,
            max_wait,
            buffer,
        })
    }

    fn receiver(&mut self, r: ReceiverKeys<'_>, key: &KeyPath) -> Option<Endpoint> {
        let timeout =
            self.positive_duration(r.timeout, DEFAULT_TELEMETRY_TIMEOUT, key.key("timeout"));
        let auth = self.auth(&r, key);
        let verify = r.verify.unwrap_or(DEFAULT_TELEMETRY_VERIFY);
        let ca_pem = r
            .ca_file
            .and_then(|file| self.ca_pem(file, key.key("ca_file")));
        let url = self.receiver_url(r.url, key.key(r.url_key))?;
        Some(Endpoint {
            url,
            timeout,
            auth: auth?,
            verify,
            ca_pem,
        })
    }

    fn receiver_url(&mut self, text: &str, key: KeyPath) -> Option<reqwest::Url> {
        let url = match reqwest::Url::parse(text) {
            Ok(url) => url,
            Err(e) => {
                self.problem(key, format!("invalid URL `{text}`: {e}"));
                return None;
            }
        };
        if !matches!(url.scheme(), "http" | "https") {
            self.problem(
                key,
                format!("`{text}`: expected an http:// or https:// URL"),
            );
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            self.problem(
                key,
                "no credentials in the URL: name environment variables with `bearer_token_env` or `basic_auth_password_env`",
            );
            return None;
        }
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.parse::<IpAddr>().is_err() && !is_valid_dns_name(host.trim_end_matches('.')) {
            self.problem(key, format!("`{host}` is not a valid host name"));
            return None;
        }
        Some(url)
    }

    fn auth(&mut self, r: &ReceiverKeys<'_>, key: &KeyPath) -> Option<Auth> {
        let bearer = r
            .bearer_token_env
            .filter(|name| self.env_var_name(name, key.key("bearer_token_env")));
        let password = r
            .basic_auth_password_env
            .filter(|name| self.env_var_name(name, key.key("basic_auth_password_env")));
        match (bearer, r.basic_auth_user, password) {
            (None, None, None) => Some(Auth::None),
            (Some(token_env), None, None) => Some(Auth::Bearer {
                token_env: token_env.to_owned(),
            }),
            (None, Some(user), Some(password_env)) => Some(Auth::Basic {
                user: user.to_owned(),
                password_env: password_env.to_owned(),
            }),
            (Some(_), _, _) => {
                self.problem(
                    key.key("bearer_token_env"),
                    "use either a bearer token or basic auth, not both",
                );
                None
            }
            (None, Some(_), None) => {
                let what = "basic auth needs `basic_auth_password_env` too (the variable holding the password)";
                self.problem(key.key("basic_auth_user"), what);
                None
            }
            (None, None, Some(_)) => {
                let what = "basic auth needs `basic_auth_user` too";
                self.problem(key.key("basic_auth_password_env"), what);
                None
            }
        }
    }

    /// The PEM file at `file`, if it holds at least one certificate.
    pub(super) fn ca_pem(&mut self, file: &str, key: KeyPath) -> Option<Vec<u8>> {
        let pem = self.read_file(file, key.clone())?;
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) if !certs.is_empty() => Some(pem),
            Ok(_) => {
                self.problem(key, format!("`{file}` holds no PEM certificate"));
                None
            }
            Err(e) => {
                self.problem(
                    key,
                    format!("`{file}` is not a PEM certificate bundle: {e}"),
                );
                None
            }
        }
    }

    /// Label names as Prometheus and Loki accept them, with values.
    fn labels(
        &mut self,
        labels: &BTreeMap<String, String>,
        key: &KeyPath,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in labels {
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with("__");
            if !valid {
                self.problem(
                    key.key(name),
                    format!("invalid label name `{name}`: letters, digits and '_', not starting with a digit or \"__\""),
                );
                continue;
            }
            if value.is_empty() {
                self.problem(key.key(name), "a label value cannot be empty");
                continue;
            }
            out.push((name.clone(), value.clone()));
        }
        out
    }

    /// Whether `name` is an environment variable name, reporting it at `key` if not.
    pub(super) fn env_var_name(&mut self, name: &str, key: KeyPath) -> bool {
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            self.problem(
                key,
                format!("`{name}` is not an environment variable name (letters, digits, '_')"),
            );
        }
        valid
    }

    fn at_least_one(&mut self, value: Option<usize>, default: usize, key: KeyPath) -> usize {
        let value = value.unwrap_or(default);
        if value == 0 {
            self.problem(key, "must be at least 1");
            return default;
        }
        value
    }
}

/// `instance` = the Fly app's name, else the host name.
fn default_labels() -> Vec<(String, String)> {
    let instance = std::env::var("FLY_APP_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "proxy-app".to_owned());
    vec![("instance".to_owned(), instance)]
}

#[cfg(test)]
mod tests {
    use crate::config::{errors, load_str};
    use std::path::Path;

    #[test]
    fn sinks_compile_with_defaults_and_merged_stream_labels() {
        let config = load_str(
            "[telemetry]\nlabels = { instance = \"flyio-proxy\" }\n\
             [telemetry.prometheus]\nremote_write = \"https://prometheus.tail1.ts.net/api/v1/write\"\n\
             [telemetry.loki]\nurl = \"https://loki.tail1.ts.net/loki/api/v1/push\"\nlabels = { job = \"flyio-nginx\" }\n",
            None,
            Path::new("."),
        )
        .unwrap();
        let t = config.telemetry();
        assert_eq!(
            t.labels(),
            [("instance".to_owned(), "flyio-proxy".to_owned())]
        );
        let names: Vec<&str> = t.endpoint_names().collect();
        assert_eq!(names, ["prometheus.tail1.ts.net", "loki.tail1.ts.net"]);
        let loki = t.loki.as_ref().unwrap();
        assert_eq!(
            loki.labels,
            [
                ("instance".to_owned(), "flyio-proxy".to_owned()),
                ("job".to_owned(), "flyio-nginx".to_owned())
            ]
        );
        assert_eq!(loki.batch_size, super::DEFAULT_LOKI_BATCH_SIZE);
        let prometheus = t.prometheus.as_ref().unwrap();
        assert_eq!(prometheus.interval, std::time::Duration::from_secs(15));
        assert!(prometheus.endpoint.verify);
    }

    #[test]
    fn no_telemetry_by_default_and_an_instance_label_all_the_same() {
        let config = load_str("", None, Path::new(".")).unwrap();
        assert!(!config.telemetry().is_enabled());
        assert_eq!(config.telemetry().labels()[0].0, "instance");
    }

    #[test]
    fn bad_values_are_reported_at_their_keys() {
        let e = errors(
            "[telemetry]\nlabels = { \"9x\" = \"a\" }\nmin_backoff = \"0s\"\n\
             [telemetry.prometheus]\nremote_write = \"ftp://x\"\nbearer_token_env = \"A B\"\n\
             [telemetry.loki]\nurl = \"https://user:pw@loki.tail1.ts.net/\"\nbasic_auth_user = \"edge\"\nbatch_size = 0\nca_file = \"/nonexistent.pem\"\n",
        );
        for key in [
            "telemetry.labels.9x",
            "telemetry.min_backoff",
            "telemetry.prometheus.remote_write",
            "telemetry.prometheus.bearer_token_env",
            "telemetry.loki.url",
            "telemetry.loki.basic_auth_user",
            "telemetry.loki.batch_size",
            "telemetry.loki.ca_file",
        ] {
            assert!(e.contains(key), "{key} missing in:\n{e}");
        }
        assert!(errors("[telemetry.loki]\nurl = \"http://loki\"\nbogus = 1\n").contains("bogus"));
        let off =
            "[admin]\nmetrics = false\n[telemetry.prometheus]\nremote_write = \"http://p/\"\n";
        assert!(errors(off).contains("telemetry.prometheus: pushes the metrics"));
    }
}
