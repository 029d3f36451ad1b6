//! User-agent deny rules: case-insensitive regexes, all matched in one pass.

use regex::bytes::{RegexSet, RegexSetBuilder};

/// Compiled user-agent deny rules.
#[derive(Debug, Clone)]
pub(crate) struct UserAgentRules {
    set: RegexSet,
}

impl UserAgentRules {
    /// Compiles the patterns (case-insensitive). The error names the first bad pattern.
    pub(crate) fn new(patterns: &[String]) -> Result<Self, (usize, String)> {
        for (i, pattern) in patterns.iter().enumerate() {
            if let Err(e) = RegexSetBuilder::new([pattern]).build() {
                let reason = e.to_string();
                let reason = reason
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                return Err((i, format!("invalid regex `{pattern}`: {reason}")));
            }
        }
        RegexSetBuilder::new(patterns)
            .case_insensitive(true)
            .build()
            .map(|set| Self { set })
            .map_err(|e| (0, e.to_string()))
    }

    /// Whether a `User-Agent` value matches any rule.
    pub(crate) fn matches(&self, user_agent: &[u8]) -> bool {
        self.set.is_match(user_agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_case_insensitively() {
        let rules = UserAgentRules::new(&["gptbot".into(), "^CCBot/".into()]).unwrap();
        assert!(rules.matches(b"Mozilla/5.0 (compatible; GPTBot/1.2)"));
        assert!(rules.matches(b"ccbot/2.0"));
        assert!(!rules.matches(b"Mozilla/5.0 (X11; Linux) Firefox/128.0"));
        assert_eq!(
            UserAgentRules::new(&["ok".into(), "(".into()])
                .unwrap_err()
                .0,
            1
        );
    }
}
