//! `PurgeInstances` with a filter: every finished instance created in a time
//! range and ending in one of the given statuses.

use std::time::SystemTime;

use super::{Engine, is_terminal, to_system_time};
use crate::{error::WorkflowError, store::listed_ids};

/// Which instances a filtered purge deletes; unset bounds are open.
#[derive(Debug, Clone, Default)]
pub struct PurgeFilter {
    /// Created at or after.
    pub created_from: Option<SystemTime>,
    /// Created before.
    pub created_to: Option<SystemTime>,
    /// Final statuses to match; empty: any terminal status.
    pub statuses: Vec<i32>,
}

impl PurgeFilter {
    fn matches(&self, created: Option<SystemTime>, status: i32) -> bool {
        if !is_terminal(status) || !(self.statuses.is_empty() || self.statuses.contains(&status)) {
            return false;
        }
        let Some(created) = created else {
            return self.created_from.is_none() && self.created_to.is_none();
        };
        self.created_from.is_none_or(|from| created >= from)
            && self.created_to.is_none_or(|to| created < to)
    }
}

impl Engine {
    /// Purges every instance matching `filter` (children too with
    /// `recursive`); returns how many instances were deleted. Unfinished
    /// instances never match.
    pub async fn purge_matching(
        &self,
        filter: &PurgeFilter,
        recursive: bool,
    ) -> Result<u32, WorkflowError> {
        let ids = listed_ids(&self.inner.store.index().await?);
        let mut deleted = 0;
        for id in ids {
            let Some(status) = self.status(&id).await? else {
                continue;
            };
            let created = status.created.as_ref().map(to_system_time);
            if !filter.matches(created, status.status as i32) {
                continue;
            }
            match self.purge(&id, recursive, false).await {
                Ok(n) => deleted += n,
                // Purged meanwhile (e.g. as another match's child) or
                // restarted since it was read: not this purge's to delete.
                Err(WorkflowError::NotTerminal(_) | WorkflowError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::proto::OrchestrationStatus;

    #[test]
    fn the_filter_matches_finished_instances_in_range_and_status() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let done = OrchestrationStatus::Completed as i32;
        let failed = OrchestrationStatus::Failed as i32;
        let running = OrchestrationStatus::Running as i32;
        let any = PurgeFilter::default();
        assert!(any.matches(Some(t0), done));
        assert!(any.matches(Some(t0), failed));
        assert!(!any.matches(Some(t0), running));
        let f = PurgeFilter {
            created_from: at(1_000),
            created_to: at(2_000),
            statuses: vec![failed],
        };
        assert!(f.matches(at(1_000), failed));
        assert!(f.matches(at(1_999), failed));
        assert!(!f.matches(at(2_000), failed));
        assert!(!f.matches(at(999), failed));
        assert!(!f.matches(at(1_500), done));
        // A running status asked for explicitly still never matches.
        let f = PurgeFilter {
            statuses: vec![running],
            ..Default::default()
        };
        assert!(!f.matches(Some(t0), running));
    }
}
