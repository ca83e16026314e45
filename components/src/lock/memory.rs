//! `lock.in-memory`: locks inside one sidecar process.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{LockError, LockStore, UnlockStatus};

#[derive(Default)]
pub struct MemoryLock {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

#[async_trait]
impl LockStore for MemoryLock {
    async fn try_lock(&self, key: &str, owner: &str, expiry_secs: u32) -> Result<bool, LockError> {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.get(key).is_some_and(|(_, until)| *until > now) {
            return Ok(false);
        }
        let until = now + Duration::from_secs(u64::from(expiry_secs));
        held.insert(key.to_owned(), (owner.to_owned(), until));
        Ok(true)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<UnlockStatus, LockError> {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match held.get(key) {
            Some((_, until)) if *until <= now => {
                held.remove(key);
                UnlockStatus::LockDoesNotExist
            }
            None => UnlockStatus::LockDoesNotExist,
            Some((o, _)) if o != owner => UnlockStatus::LockBelongsToOthers,
            Some(_) => {
                held.remove(key);
                UnlockStatus::Success
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn owner_and_expiry() {
        let l = MemoryLock::default();
        assert!(l.try_lock("r", "a", 10).await.unwrap());
        assert!(!l.try_lock("r", "b", 10).await.unwrap());
        assert_eq!(
            l.unlock("r", "b").await.unwrap(),
            UnlockStatus::LockBelongsToOthers
        );
        assert_eq!(l.unlock("r", "a").await.unwrap(), UnlockStatus::Success);
        assert_eq!(
            l.unlock("r", "a").await.unwrap(),
            UnlockStatus::LockDoesNotExist
        );
        assert!(l.try_lock("r", "b", 10).await.unwrap());
    }
}
