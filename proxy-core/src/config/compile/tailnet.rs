//! `[tailnet]` and the `transport` of `[upstreams.NAME]`: the userspace tailnet node that
//! `transport = "tailscale-rs"` upstreams dial through (cargo feature `tailscale-rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Compiler;
use crate::config::error::KeyPath;
use crate::config::file::{TailnetSection, DEFAULT_TRANSPORT};
use crate::tailnet::TailnetSettings;
#[cfg(not(feature = "tailscale-rs"))]
use crate::tailnet::FEATURE_NEEDED;
use crate::upstream::{Transport, Upstream};

/// The `transport` value of the userspace tailnet.
const USERSPACE: &str = "tailscale-rs";

impl Compiler<'_> {
    /// An upstream's `transport`; `None` (reported) if unknown or not built in.
    pub(super) fn transport(&mut self, text: Option<&str>, key: KeyPath) -> Option<Transport> {
        match text.unwrap_or(DEFAULT_TRANSPORT) {
            "kernel" => Some(Transport::Kernel),
            USERSPACE => self.userspace_transport(key),
            other => {
                self.problem(
                    key,
                    format!("unknown transport `{other}`: expected \"kernel\" or \"{USERSPACE}\""),
                );
                None
            }
        }
    }

    #[cfg(feature = "tailscale-rs")]
    fn userspace_transport(&mut self, _key: KeyPath) -> Option<Transport> {
        Some(Transport::Userspace(Arc::default()))
    }

    #[cfg(not(feature = "tailscale-rs"))]
    fn userspace_transport(&mut self, key: KeyPath) -> Option<Transport> {
        self.problem(key, format!("transport `{USERSPACE}` {FEATURE_NEEDED}"));
        None
    }

    /// `[tailnet]`; `upstreams` (under `upstreams_key`) are checked for a `tailscale-rs`
    /// upstream without it.
    pub(super) fn tailnet(
        &mut self,
        section: Option<&TailnetSection>,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        upstreams_key: &KeyPath,
        key: &KeyPath,
    ) -> Option<TailnetSettings> {
        let Some(t) = section else {
            for (name, upstream) in upstreams {
                if upstream.transport() == USERSPACE {
                    self.problem(
                        upstreams_key.key(name).key("transport"),
                        format!("transport `{USERSPACE}` needs a `[tailnet]` section (at least `state_dir`)"),
                    );
                }
            }
            return None;
        };
        #[cfg(not(feature = "tailscale-rs"))]
        {
            let _ = t;
            self.problem(key.clone(), format!("`[tailnet]` {FEATURE_NEEDED}"));
            None
        }
        #[cfg(feature = "tailscale-rs")]
        self.tailnet_settings(t, key)
    }

    #[cfg(feature = "tailscale-rs")]
    fn tailnet_settings(&mut self, t: &TailnetSection, key: &KeyPath) -> Option<TailnetSettings> {
        use super::is_valid_dns_name;
        use crate::config::file::{DEFAULT_AUTH_KEY_ENV, DEFAULT_CONTROL_URL};
        if t.state_dir.trim().is_empty() {
            self.problem(key.key("state_dir"), "must name a directory");
        }
        if let Some(hostname) = &t.hostname {
            if !is_valid_dns_name(hostname) || hostname.contains('.') {
                self.problem(
                    key.key("hostname"),
                    format!(
                        "invalid hostname `{hostname}`: expected one DNS label, e.g. \"edge-fra\""
                    ),
                );
            }
        }
        let control_url = t.control_url.as_deref().unwrap_or(DEFAULT_CONTROL_URL);
        match reqwest::Url::parse(control_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => self.problem(
                key.key("control_url"),
                format!("invalid control_url `{control_url}`: expected an http(s) URL, e.g. \"{DEFAULT_CONTROL_URL}\""),
            ),
        }
        let auth_key_env = t.auth_key_env.as_deref().unwrap_or(DEFAULT_AUTH_KEY_ENV);
        let valid_env = !auth_key_env.is_empty()
            && auth_key_env
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_env {
            self.problem(
                key.key("auth_key_env"),
                format!("invalid environment variable name `{auth_key_env}`: expected letters, digits and `_`"),
            );
        }
        Some(TailnetSettings {
            state_dir: self.path(&t.state_dir),
            hostname: t.hostname.clone(),
            control_url: control_url.to_string(),
            auth_key_env: auth_key_env.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{assert_mentions, errors};

    const USERSPACE_UPSTREAM: &str = r#"[upstreams.docs]
address = "docs.tail1.ts.net:443"
transport = "tailscale-rs"
[sites.docs]
hosts = ["docs.example.com"]
[[sites.docs.locations]]
match = "/"
proxy = "docs"
"#;

    #[test]
    fn an_unknown_transport_is_named() {
        let text = USERSPACE_UPSTREAM.replace("tailscale-rs", "wireguard");
        assert_mentions(
            &["edge.toml:3: upstreams.docs.transport: unknown transport `wireguard`: expected \"kernel\" or \"tailscale-rs\""],
            &errors(&text),
        );
    }

    #[cfg(not(feature = "tailscale-rs"))]
    #[test]
    fn without_the_feature_the_transport_and_the_section_name_the_feature_to_build() {
        let text = format!("{USERSPACE_UPSTREAM}[tailnet]\nstate_dir = \"state\"\n");
        assert_mentions(
            &[
                "edge.toml:3: upstreams.docs.transport: transport `tailscale-rs` needs the cargo feature `tailscale-rs`, which this build lacks (build with `--features tailscale-rs`)",
                "edge.toml:9: tailnet: `[tailnet]` needs the cargo feature `tailscale-rs`",
            ],
            &errors(&text),
        );
    }

    /// Builders produce what the TOML does: the same upstream, refused or accepted alike.
    #[test]
    fn builders_set_the_transport_and_the_section() {
        use crate::config::file::TailnetSection;
        use crate::config::{ConfigBuilder, LocationBuilder, SiteBuilder, UpstreamBuilder};
        let built = ConfigBuilder::new()
            .upstream(
                "docs",
                UpstreamBuilder::new("docs:80").transport("tailscale-rs"),
            )
            .site(
                "docs",
                SiteBuilder::new()
                    .host("docs.example.com")
                    .location(LocationBuilder::new("/").proxy("docs")),
            )
            .tailnet(TailnetSection {
                state_dir: "state".into(),
                ..TailnetSection::default()
            })
            .build();
        let with_feature = cfg!(feature = "tailscale-rs");
        match built {
            Ok(config) if with_feature => {
                let upstream = config.upstreams().next().expect("docs");
                assert_eq!(upstream.transport(), "tailscale-rs");
                assert!(config.tailnet().is_some());
            }
            Err(e) if !with_feature => {
                assert!(
                    e.to_string()
                        .contains("needs the cargo feature `tailscale-rs`"),
                    "{e}"
                );
            }
            Ok(_) => panic!("accepted without the feature"),
            Err(e) => panic!("refused with the feature: {e}"),
        }
    }

    #[cfg(feature = "tailscale-rs")]
    #[test]
    fn the_transport_needs_a_tailnet_section_and_valid_keys() {
        assert_mentions(
            &["edge.toml:3: upstreams.docs.transport: transport `tailscale-rs` needs a `[tailnet]` section"],
            &errors(USERSPACE_UPSTREAM),
        );
        let good = format!(
            "{USERSPACE_UPSTREAM}[tailnet]\nstate_dir = \"state\"\nhostname = \"edge-fra\"\n"
        );
        assert_eq!(errors(&good), "no error");
        let bad = format!(
            "{USERSPACE_UPSTREAM}[tailnet]\nstate_dir = \"\"\nhostname = \"a.b\"\ncontrol_url = \"controlplane\"\nauth_key_env = \"TS-KEY\"\n"
        );
        assert_mentions(
            &[
                "edge.toml:10: tailnet.state_dir: must name a directory",
                "edge.toml:11: tailnet.hostname: invalid hostname `a.b`",
                "edge.toml:12: tailnet.control_url: invalid control_url `controlplane`",
                "edge.toml:13: tailnet.auth_key_env: invalid environment variable name `TS-KEY`",
            ],
            &errors(&bad),
        );
    }
}
