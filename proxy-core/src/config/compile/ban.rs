//! `[bans]`: the rules that ban clients, and where the bans are kept.

use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::Arc;

use super::Compiler;
use crate::access::IpSet;
use crate::ban::{BanRule, BanRules, BanSettings, BanTrigger};
use crate::config::error::KeyPath;
use crate::config::file::{
    BanRuleSection, BansSection, DEFAULT_BAN_BODY, DEFAULT_BAN_DURATION, DEFAULT_BAN_STATUS,
    DEFAULT_BAN_WINDOW, DEFAULT_MAX_BANS, DEFAULT_MAX_TRACKED,
};

impl Compiler<'_> {
    pub(super) fn bans(&mut self, s: &BansSection, key: &KeyPath) -> (BanRules, BanSettings) {
        let settings = BanSettings {
            state_file: s.state_file.as_deref().map(|path| self.path(path)),
            max_bans: self.positive_count(s.max_bans, DEFAULT_MAX_BANS, key.key("max_bans")),
        };
        let max_tracked =
            self.positive_count(s.max_tracked, DEFAULT_MAX_TRACKED, key.key("max_tracked"));
        let mut exempt = IpSet::default();
        for (i, text) in s.exempt.iter().enumerate() {
            if let Some(net) = self.cidr(text, key.key("exempt").index(i)) {
                exempt.insert(net);
            }
        }
        let status = self.status(
            s.status,
            DEFAULT_BAN_STATUS,
            400..=599,
            "`status` must be an error status from 400 to 599",
            key.key("status"),
        );
        let body = Bytes::from(s.body.clone().unwrap_or_else(|| DEFAULT_BAN_BODY.into()));
        let mut names = BTreeSet::new();
        let rules = s
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| {
                let key = key.key("rules").index(i);
                self.check_name("ban rule", &rule.name, &key.key("name"));
                if !names.insert(rule.name.as_str()) {
                    self.problem(
                        key.key("name"),
                        format!("ban rule `{}` is defined twice", rule.name),
                    );
                }
                self.ban_rule(rule, max_tracked, &key)
            })
            .collect();
        (BanRules::new(rules, exempt, status, body), settings)
    }

    fn ban_rule(
        &mut self,
        rule: &BanRuleSection,
        max_tracked: usize,
        key: &KeyPath,
    ) -> Option<BanRule> {
        let duration = self.positive_duration(
            rule.duration.as_deref(),
            DEFAULT_BAN_DURATION,
            key.key("duration"),
        );
        let window = self.positive_duration(
            rule.window.as_deref(),
            DEFAULT_BAN_WINDOW,
            key.key("window"),
        );
        let trigger = match (&rule.statuses, &rule.paths) {
            (Some(statuses), None) => {
                for (i, status) in statuses.iter().enumerate() {
                    if !(100..=599).contains(status) {
                        self.problem(
                            key.key("statuses").index(i),
                            format!("`{status}` is no HTTP status (100 to 599)"),
                        );
                    }
                }
                let Some(count) = rule.count.filter(|c| *c > 0) else {
                    self.problem(
                        key.key("count"),
                        "a rule over `statuses` needs `count`, the answers within `window` that ban (at least 1)",
                    );
                    return None;
                };
                BanTrigger::statuses(statuses.clone(), count, window, max_tracked)
            }
            (None, Some(paths)) => {
                for (i, path) in paths.iter().enumerate() {
                    if !path.starts_with('/') {
                        self.problem(
                            key.key("paths").index(i),
                            format!("trap path `{path}` must start with '/'"),
                        );
                    }
                }
                if rule.count.is_some() {
                    self.problem(
                        key.key("count"),
                        "`count` belongs to a rule over `statuses`; a trap path bans at the first request",
                    );
                }
                BanTrigger::Paths(paths.clone())
            }
            _ => {
                self.problem(
                    key.clone(),
                    "a ban rule needs exactly one of `statuses` (with `count`) and `paths`",
                );
                return None;
            }
        };
        Some(BanRule {
            name: Arc::from(rule.name.as_str()),
            duration,
            trigger,
        })
    }

    /// A count key that must be at least 1.
    fn positive_count(&mut self, value: Option<usize>, default: usize, key: KeyPath) -> usize {
        match value {
            Some(0) => {
                self.problem(key, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }
}
