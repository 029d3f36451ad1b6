//! `compress = { ... }` on sites and locations.

use std::sync::Arc;

use super::Compiler;
use crate::compress::{CompressPolicy, Encoding, MediaTypes};
use crate::config::error::KeyPath;
use crate::config::file::{
    CompressSection, DEFAULT_BR_LEVEL, DEFAULT_COMPRESS_ENABLED, DEFAULT_COMPRESS_ENCODINGS,
    DEFAULT_COMPRESS_MIN_LENGTH, DEFAULT_COMPRESS_TYPES, DEFAULT_GZIP_LEVEL, DEFAULT_ZSTD_LEVEL,
};

impl Compiler<'_> {
    /// Checks a site's `compress` table on its own, so its problems are reported once, at
    /// its key, however many locations inherit it.
    pub(super) fn check_site_compress(&mut self, site: Option<&CompressSection>, key: &KeyPath) {
        if let Some(section) = site {
            self.compress_policy(section, key);
        }
    }

    /// A location's compression: the location's keys win over the site's. `None` when
    /// neither has a `compress` table, the merged `enabled` is false, or the location does
    /// not proxy (only upstream answers are compressed). Problems of the location's own table
    /// are reported at `key`; the site's by [`Self::check_site_compress`].
    pub(super) fn location_compress(
        &mut self,
        site: Option<&CompressSection>,
        location: Option<&CompressSection>,
        proxies: bool,
        key: &KeyPath,
    ) -> Option<Arc<CompressPolicy>> {
        if let Some(section) = location {
            self.compress_policy(section, key);
            if !proxies && section.enabled != Some(false) {
                self.problem(key.clone(), "`compress` has no effect without `proxy`");
            }
        }
        if !proxies {
            return None;
        }
        let merged = match (site, location) {
            (Some(site), location) => merge(site.clone(), location.cloned()),
            (None, location) => location.cloned()?,
        };
        if !merged.enabled.unwrap_or(DEFAULT_COMPRESS_ENABLED) {
            return None;
        }
        // Both halves were checked above; compile the merge without reporting twice.
        let reported = std::mem::take(&mut self.problems);
        let policy = self.compress_policy(&merged, key);
        self.problems = reported;
        Some(Arc::new(policy))
    }

    fn compress_policy(&mut self, s: &CompressSection, key: &KeyPath) -> CompressPolicy {
        let level = |c: &mut Self, value: Option<u32>, default: u32, max: u32, name: &str| {
            let level = value.unwrap_or(default);
            if !(1..=max).contains(&level) {
                c.problem(
                    key.key(name),
                    format!("`{name}` is {level}; it must be from 1 to {max}"),
                );
                return default;
            }
            level
        };
        let mut levels = [0; 3];
        levels[Encoding::Zstd as usize] =
            level(self, s.zstd_level, DEFAULT_ZSTD_LEVEL, 19, "zstd_level");
        levels[Encoding::Brotli as usize] =
            level(self, s.br_level, DEFAULT_BR_LEVEL, 11, "br_level");
        levels[Encoding::Gzip as usize] =
            level(self, s.gzip_level, DEFAULT_GZIP_LEVEL, 9, "gzip_level");
        CompressPolicy {
            encodings: self.encodings(s.encodings.as_deref(), &key.key("encodings")),
            types: self.media_types(s.types.as_deref(), &key.key("types")),
            min_length: self.size(
                s.min_length.as_deref(),
                DEFAULT_COMPRESS_MIN_LENGTH,
                key.key("min_length"),
            ),
            levels,
        }
    }

    fn encodings(&mut self, names: Option<&[String]>, key: &KeyPath) -> Vec<Encoding> {
        let default: Vec<String> = DEFAULT_COMPRESS_ENCODINGS
            .iter()
            .map(|n| n.to_string())
            .collect();
        let names = names.unwrap_or(&default);
        if names.is_empty() {
            self.problem(
                key.clone(),
                "`encodings` is empty; name at least one of \"zstd\", \"br\", \"gzip\" (or set `enabled = false`)",
            );
        }
        let mut encodings = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match Encoding::ALL.into_iter().find(|e| e.token() == name) {
                Some(e) if encodings.contains(&e) => {
                    self.problem(key.index(i), format!("`{name}` is listed twice"));
                }
                Some(e) => encodings.push(e),
                None => self.problem(
                    key.index(i),
                    format!("unknown encoding `{name}`; the proxy compresses with \"zstd\", \"br\" and \"gzip\""),
                ),
            }
        }
        encodings
    }

    fn media_types(&mut self, types: Option<&[String]>, key: &KeyPath) -> MediaTypes {
        let Some(types) = types else {
            let listed = DEFAULT_COMPRESS_TYPES.iter().map(|t| t.to_string());
            return MediaTypes::Listed(listed.collect());
        };
        if types.iter().any(|t| t == "*") {
            return MediaTypes::Any;
        }
        let mut listed = Vec::new();
        for (i, text) in types.iter().enumerate() {
            let well_formed = text.split_once('/').is_some_and(|(top, sub)| {
                let token = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
                };
                token(top) && (sub == "*" || token(sub))
            });
            if well_formed {
                listed.push(text.to_ascii_lowercase());
            } else {
                self.problem(
                    key.index(i),
                    format!("`{text}` is no media type; write `type/subtype`, `type/*` or `*` (without parameters)"),
                );
            }
        }
        MediaTypes::Listed(listed)
    }
}

fn merge(site: CompressSection, loc: Option<CompressSection>) -> CompressSection {
    let Some(l) = loc else { return site };
    CompressSection {
        enabled: l.enabled.or(site.enabled),
        encodings: l.encodings.or(site.encodings),
        types: l.types.or(site.types),
        min_length: l.min_length.or(site.min_length),
        gzip_level: l.gzip_level.or(site.gzip_level),
        br_level: l.br_level.or(site.br_level),
        zstd_level: l.zstd_level.or(site.zstd_level),
    }
}

#[cfg(test)]
mod tests {
    use crate::compress::{Encoding, MediaTypes};
    use crate::config::{assert_mentions, errors, load_str};
    use std::path::Path;

    const UPSTREAM: &str = "[upstreams.docs]\naddress = \"docs.tail1.ts.net:80\"\n\n";

    fn config_text(site_compress: &str, location_compress: &str) -> String {
        format!(
            "{UPSTREAM}[sites.docs]\nhosts = [\"docs.example.com\"]\n{site_compress}\n[[sites.docs.locations]]\nmatch = \"/\"\nproxy = \"docs\"\n{location_compress}\n[[sites.docs.locations]]\nmatch = \"/raw/\"\nproxy = \"docs\"\ncompress = {{ enabled = false }}\n"
        )
    }

    #[test]
    fn bad_values_are_reported_at_their_keys() {
        let text = config_text(
            "compress = { encodings = [\"gzip\", \"deflate\", \"gzip\"], gzip_level = 10 }",
            "compress = { types = [\"text/html; charset=utf-8\", \"html\"], min_length = \"lots\", br_level = 0, zstd_level = 20 }",
        );
        let e = errors(&text);
        assert_mentions(
            &[
                "edge.toml:6: sites.docs.compress.encodings[1]: unknown encoding `deflate`",
                "sites.docs.compress.encodings[2]: `gzip` is listed twice",
                "sites.docs.compress.gzip_level: `gzip_level` is 10; it must be from 1 to 9",
                "sites.docs.locations[0].compress.types[0]: `text/html; charset=utf-8` is no media type",
                "sites.docs.locations[0].compress.types[1]: `html` is no media type",
                "sites.docs.locations[0].compress.min_length: invalid size",
                "sites.docs.locations[0].compress.br_level: `br_level` is 0; it must be from 1 to 11",
                "sites.docs.locations[0].compress.zstd_level: `zstd_level` is 20; it must be from 1 to 19",
            ],
            &e,
        );
        // The site's problems once, though two locations inherit its table.
        assert_eq!(e.matches("listed twice").count(), 1, "{e}");
        let empty = errors(&config_text("compress = { encodings = [] }", ""));
        assert_mentions(
            &["sites.docs.compress.encodings: `encodings` is empty"],
            &empty,
        );
        let unknown = errors(&config_text("compress = { level = 3 }", ""));
        assert_mentions(&["sites.docs.compress", "unknown field `level`"], &unknown);
        let answer = format!(
            "{UPSTREAM}[sites.docs]\nhosts = [\"docs.example.com\"]\ncompress = {{ }}\n[[sites.docs.locations]]\nmatch = \"/\"\nreturn = {{ body = \"hi\" }}\ncompress = {{ min_length = \"1\" }}\n"
        );
        assert_mentions(
            &["sites.docs.locations[0].compress: `compress` has no effect without `proxy`"],
            &errors(&answer),
        );
    }

    #[test]
    fn a_location_inherits_the_site_key_by_key_and_may_turn_it_off() {
        let text = config_text(
            "compress = { encodings = [\"gzip\", \"br\"], min_length = \"1k\" }",
            "compress = { types = [\"text/*\", \"application/JSON\"], gzip_level = 1 }",
        );
        let config = load_str(&text, None, Path::new(".")).expect("valid config");
        let site = config.site_for_host("docs.example.com").expect("site");
        let root = site.location_for_path(b"/").expect("root");
        let policy = root.compression().expect("compresses");
        assert_eq!(policy.encodings, vec![Encoding::Gzip, Encoding::Brotli]);
        assert_eq!(policy.min_length, 1024);
        assert_eq!(policy.level(Encoding::Gzip), 1);
        assert_eq!(policy.level(Encoding::Brotli), 5);
        assert_eq!(
            policy.types,
            MediaTypes::Listed(vec!["text/*".into(), "application/json".into()])
        );
        assert!(policy.types.contains(b"text/markdown; charset=utf-8"));
        assert!(policy.types.contains(b"Application/Json"));
        assert!(!policy.types.contains(b"image/png"));
        let raw = site.location_for_path(b"/raw/x").expect("raw");
        assert!(raw.compression().is_none());
        let plain = load_str(&config_text("", ""), None, Path::new(".")).expect("valid config");
        let plain_site = plain.site_for_host("docs.example.com").expect("site");
        let plain_root = plain_site.location_for_path(b"/").expect("root");
        assert!(plain_root.compression().is_none());
    }

    #[test]
    fn builders_set_the_same_keys() {
        use crate::config::file::CompressSection;
        use crate::config::{ConfigBuilder, LocationBuilder, SiteBuilder, UpstreamBuilder};
        let off = CompressSection {
            enabled: Some(false),
            ..CompressSection::default()
        };
        let config = ConfigBuilder::new()
            .upstream("docs", UpstreamBuilder::new("docs.tail1.ts.net:80"))
            .site(
                "docs",
                SiteBuilder::new()
                    .host("docs.example.com")
                    .compress(CompressSection::default())
                    .location(LocationBuilder::new("/").proxy("docs"))
                    .location(LocationBuilder::new("/raw/").proxy("docs").compress(off)),
            )
            .build()
            .expect("valid config");
        let site = config.site_for_host("docs.example.com").expect("site");
        let root = site.location_for_path(b"/").expect("root");
        assert_eq!(root.compression().expect("compresses").min_length, 512);
        let raw = site.location_for_path(b"/raw/x").expect("raw");
        assert!(raw.compression().is_none());
    }
}
