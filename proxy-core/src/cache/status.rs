//! [`CacheStatus`]: nginx's `$upstream_cache_status` words, so existing dashboards keep working.

use pingora::cache::CachePhase;

/// What the cache did for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Not in the cache (or not storable): fetched from the upstream.
    Miss,
    /// Served fresh from the cache.
    Hit,
    /// In the cache but expired: fetched again from the upstream.
    Expired,
    /// Expired, served anyway because the upstream failed (stale-if-error).
    Stale,
    /// Expired, served while another request refreshes it (stale-while-revalidate).
    Updating,
    /// Expired, confirmed unchanged by the upstream (304) and served from the cache.
    Revalidated,
    /// The request skipped the cache (bypass rules, or a cache lock timeout).
    Bypass,
}

impl CacheStatus {
    /// The nginx word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Miss => "MISS",
            Self::Hit => "HIT",
            Self::Expired => "EXPIRED",
            Self::Stale => "STALE",
            Self::Updating => "UPDATING",
            Self::Revalidated => "REVALIDATED",
            Self::Bypass => "BYPASS",
        }
    }

    /// The status for a request the cache was enabled for, from pingora-cache's phase.
    pub fn from_phase(phase: CachePhase) -> Self {
        match phase {
            CachePhase::Hit => Self::Hit,
            CachePhase::Stale => Self::Stale,
            CachePhase::StaleUpdating => Self::Updating,
            CachePhase::Expired => Self::Expired,
            CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => Self::Revalidated,
            CachePhase::Bypass => Self::Bypass,
            CachePhase::Disabled(pingora::cache::NoCacheReason::CacheLockTimeout) => Self::Bypass,
            _ => Self::Miss,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_words() {
        assert_eq!(CacheStatus::from_phase(CachePhase::Hit).as_str(), "HIT");
        assert_eq!(CacheStatus::from_phase(CachePhase::Miss).as_str(), "MISS");
        assert_eq!(
            CacheStatus::from_phase(CachePhase::StaleUpdating).as_str(),
            "UPDATING"
        );
        assert_eq!(
            CacheStatus::from_phase(CachePhase::Revalidated).as_str(),
            "REVALIDATED"
        );
        assert_eq!(CacheStatus::from_phase(CachePhase::Stale).as_str(), "STALE");
        assert_eq!(
            CacheStatus::from_phase(CachePhase::Expired).as_str(),
            "EXPIRED"
        );
    }
}
