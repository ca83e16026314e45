//! The shared state store conformance suite.
//!
//! Every store runs the same tests through `conformance_suite!`:
//!
//! ```ignore
//! conformance_suite!(postgres, async { create_postgres().await });
//! ```
//!
//! The expression must evaluate to `Arc<dyn StateStore>`. Each test uses its
//! own random key prefix, so tests may run in parallel against one shared
//! server and leftovers from earlier runs never interfere.
//!
//! Stores backed by a server fail (never skip) when it is unreachable; run
//! `cargo test -p dapr-components --test state_conformance` with the servers
//! described below started.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use dapr_components::{
    ComponentMetadata,
    state::{
        self, BulkGetItem, Concurrency, DeleteRequest, GetRequest, SetRequest, StateError,
        StateItem, StateStore, TTL_EXPIRE_TIME_KEY, TransactionOp, query,
    },
};

/// The test bodies, shared by every store.
pub mod suite {
    use super::*;

    /// A per-test namespace in Dapr's `<appid>||<key>` key scheme.
    pub struct Keys {
        prefix: String,
    }

    impl Default for Keys {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Keys {
        pub fn new() -> Self {
            Self {
                prefix: format!("conf-{}||", uuid::Uuid::new_v4().simple()),
            }
        }

        pub fn key(&self, name: &str) -> String {
            format!("{}{name}", self.prefix)
        }

        pub fn prefix(&self) -> &str {
            &self.prefix
        }
    }

    pub fn set_req(key: &str, value: impl Into<Bytes>) -> SetRequest {
        SetRequest {
            key: key.to_owned(),
            value: value.into(),
            ..SetRequest::default()
        }
    }

    pub fn set_etag(key: &str, value: impl Into<Bytes>, etag: &str) -> SetRequest {
        SetRequest {
            etag: Some(etag.to_owned()),
            ..set_req(key, value)
        }
    }

    pub fn del_req(key: &str, etag: Option<&str>) -> DeleteRequest {
        DeleteRequest {
            key: key.to_owned(),
            etag: etag.map(str::to_owned),
            ..DeleteRequest::default()
        }
    }

    pub fn get_req(key: &str) -> GetRequest {
        GetRequest {
            key: key.to_owned(),
            ..GetRequest::default()
        }
    }

    pub async fn get(store: &Arc<dyn StateStore>, key: &str) -> Option<StateItem> {
        store.get(&get_req(key)).await.unwrap()
    }

    pub async fn put(store: &Arc<dyn StateStore>, key: &str, value: &[u8]) -> String {
        store
            .set(&set_req(key, Bytes::copy_from_slice(value)))
            .await
            .unwrap();
        etag_of(store, key).await
    }

    pub async fn etag_of(store: &Arc<dyn StateStore>, key: &str) -> String {
        get(store, key)
            .await
            .unwrap_or_else(|| panic!("{key} should exist"))
            .etag
            .expect("etag stores return an etag on get")
    }

    pub async fn value_of(store: &Arc<dyn StateStore>, key: &str) -> Option<Bytes> {
        get(store, key).await.map(|i| i.value)
    }

    pub async fn crud(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let key = k.key("crud");
        store.set(&set_req(&key, &br#"{"n":1}"#[..])).await.unwrap();
        let item = get(&store, &key).await.unwrap();
        assert_eq!(item.value, &br#"{"n":1}"#[..]);
        let first = item.etag.clone().expect("etag");
        assert!(!first.is_empty());

        store.set(&set_req(&key, &br#"{"n":2}"#[..])).await.unwrap();
        let item = get(&store, &key).await.unwrap();
        assert_eq!(item.value, &br#"{"n":2}"#[..]);
        assert_ne!(
            item.etag.as_deref(),
            Some(first.as_str()),
            "etag changes on write"
        );

        store.delete(&del_req(&key, None)).await.unwrap();
        assert!(get(&store, &key).await.is_none());
    }

    pub async fn get_missing(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        assert!(get(&store, &k.key("never-written")).await.is_none());
    }

    pub async fn etag_match(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let key = k.key("etag");
        let e1 = put(&store, &key, b"\"v1\"").await;
        store.set(&set_etag(&key, "\"v2\"", &e1)).await.unwrap();
        let e2 = etag_of(&store, &key).await;
        assert_ne!(e1, e2);
        assert_eq!(value_of(&store, &key).await.unwrap(), "\"v2\"");
        store.delete(&del_req(&key, Some(&e2))).await.unwrap();
        assert!(get(&store, &key).await.is_none());
    }

    pub async fn etag_mismatch(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let key = k.key("etag");
        let stale = put(&store, &key, b"\"v1\"").await;
        put(&store, &key, b"\"v2\"").await;
        assert_eq!(
            store.set(&set_etag(&key, "\"v3\"", &stale)).await,
            Err(StateError::EtagMismatch)
        );
        assert_eq!(value_of(&store, &key).await.unwrap(), "\"v2\"");

        // An etag for a key that does not exist never matches.
        let missing = k.key("missing");
        assert_eq!(
            store.set(&set_etag(&missing, "\"x\"", &stale)).await,
            Err(StateError::EtagMismatch)
        );
        assert!(get(&store, &missing).await.is_none());
    }

    pub async fn etag_invalid(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let key = k.key("etag");
        put(&store, &key, b"\"v1\"").await;
        // Not a valid etag in any store's format (uuid, integer, xmin).
        let bad = "not a valid etag!";
        assert!(matches!(
            store.set(&set_etag(&key, "\"v2\"", bad)).await,
            Err(StateError::EtagInvalid(_))
        ));
        assert!(matches!(
            store.delete(&del_req(&key, Some(bad))).await,
            Err(StateError::EtagInvalid(_))
        ));
        assert_eq!(value_of(&store, &key).await.unwrap(), "\"v1\"");
    }

    pub async fn first_write(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let key = k.key("fw");
        let fw = |value: &'static str, etag: Option<&str>| SetRequest {
            etag: etag.map(str::to_owned),
            concurrency: Concurrency::FirstWrite,
            ..set_req(&key, value)
        };
        store.set(&fw("\"a\"", None)).await.unwrap();
        assert_eq!(
            store.set(&fw("\"b\"", None)).await,
            Err(StateError::EtagMismatch)
        );
        assert_eq!(value_of(&store, &key).await.unwrap(), "\"a\"");

        let e = etag_of(&store, &key).await;
        store.set(&fw("\"c\"", Some(&e))).await.unwrap();
        assert_eq!(value_of(&store, &key).await.unwrap(), "\"c\"");
        assert_eq!(
            store.set(&fw("\"d\"", Some(&e))).await,
            Err(StateError::EtagMismatch)
        );
        assert_eq!(value_of(&store, &key).await.unwrap(), "\"c\"");

        // After a delete the key may be first-written again.
        store.delete(&del_req(&key, None)).await.unwrap();
        store.set(&fw("\"e\"", None)).await.unwrap();
        assert_eq!(value_of(&store, &key).await.unwrap(), "\"e\"");
    }

    const WRITERS: usize = 20;

    pub async fn concurrent_etag_writers(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let key = k.key("race");
        let etag = put(&store, &key, b"\"start\"").await;
        let tasks: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (store, key, etag) = (store.clone(), key.clone(), etag.clone());
                tokio::spawn(async move {
                    store
                        .set(&set_etag(&key, format!("\"writer-{i}\""), &etag))
                        .await
                        .map(|()| i)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(i) => winners.push(i),
                Err(e) => assert_eq!(e, StateError::EtagMismatch),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one writer wins: {winners:?}");
        assert_eq!(
            value_of(&store, &key).await.unwrap(),
            format!("\"writer-{}\"", winners[0])
        );
    }

    pub async fn concurrent_first_writers(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let key = k.key("race-fw");
        let tasks: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    let req = SetRequest {
                        concurrency: Concurrency::FirstWrite,
                        ..set_req(&key, format!("\"writer-{i}\""))
                    };
                    store.set(&req).await.map(|()| i)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(i) => winners.push(i),
                Err(e) => assert_eq!(e, StateError::EtagMismatch),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one writer wins: {winners:?}");
        assert_eq!(
            value_of(&store, &key).await.unwrap(),
            format!("\"writer-{}\"", winners[0])
        );
    }

    pub async fn bulk_get(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let mut reqs = Vec::new();
        for i in 0..12 {
            let key = k.key(&format!("bulk-{i}"));
            if i % 4 != 3 {
                put(&store, &key, format!("{{\"i\":{i}}}").as_bytes()).await;
            }
            reqs.push(get_req(&key));
        }
        for parallelism in [1, 3, 16] {
            let out: Vec<BulkGetItem> = store.bulk_get(&reqs, parallelism).await;
            assert_eq!(out.len(), reqs.len());
            for (i, (item, req)) in out.iter().zip(&reqs).enumerate() {
                assert_eq!(item.key, req.key, "results come back in request order");
                let got = item.result.clone().unwrap();
                if i % 4 == 3 {
                    assert!(got.is_none());
                } else {
                    let got = got.unwrap();
                    assert_eq!(got.value, format!("{{\"i\":{i}}}"));
                    assert!(got.etag.is_some());
                }
            }
        }
    }

    pub async fn bulk_set_delete(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let keys: Vec<String> = (0..10).map(|i| k.key(&format!("b{i}"))).collect();
        let sets: Vec<SetRequest> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| set_req(key, format!("{i}")))
            .collect();
        store.bulk_set(&sets).await.unwrap();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(value_of(&store, key).await.unwrap(), format!("{i}"));
        }
        let dels: Vec<DeleteRequest> = keys[..5].iter().map(|key| del_req(key, None)).collect();
        store.bulk_delete(&dels).await.unwrap();
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(value_of(&store, key).await.is_some(), i >= 5, "{key}");
        }
    }

    pub async fn transaction_commits(store: Arc<dyn StateStore>) {
        if !store.features().transactional {
            assert_eq!(
                store.transact(&[]).await,
                Err(StateError::NotSupported("transactions"))
            );
            return;
        }
        let k = Keys::new();
        let (a, b, c) = (k.key("a"), k.key("b"), k.key("c"));
        let eb = put(&store, &b, b"\"b0\"").await;
        put(&store, &c, b"\"c0\"").await;
        store
            .transact(&[
                TransactionOp::Set(set_req(&a, "\"a1\"")),
                TransactionOp::Set(set_etag(&b, "\"b1\"", &eb)),
                TransactionOp::Delete(del_req(&c, None)),
            ])
            .await
            .unwrap();
        assert_eq!(value_of(&store, &a).await.unwrap(), "\"a1\"");
        assert_eq!(value_of(&store, &b).await.unwrap(), "\"b1\"");
        assert!(get(&store, &c).await.is_none());

        // The same key several times in one transaction: operations apply in order.
        let d = k.key("d");
        store
            .transact(&[
                TransactionOp::Set(set_req(&d, "\"d1\"")),
                TransactionOp::Delete(del_req(&d, None)),
                TransactionOp::Set(set_req(&d, "\"d2\"")),
                TransactionOp::Set(set_req(&a, "\"a2\"")),
                TransactionOp::Delete(del_req(&a, None)),
            ])
            .await
            .unwrap();
        assert_eq!(value_of(&store, &d).await.unwrap(), "\"d2\"");
        assert!(get(&store, &a).await.is_none());
    }

    pub async fn transaction_atomic(store: Arc<dyn StateStore>) {
        if !store.features().transactional {
            return;
        }
        let k = Keys::new();
        let (fresh, doomed, guarded) = (k.key("fresh"), k.key("doomed"), k.key("guarded"));
        put(&store, &doomed, b"\"keep me\"").await;
        let stale = put(&store, &guarded, b"\"g0\"").await;
        put(&store, &guarded, b"\"g1\"").await;

        // The last operation fails its etag check: nothing before it may stick.
        let res = store
            .transact(&[
                TransactionOp::Set(set_req(&fresh, "\"new\"")),
                TransactionOp::Delete(del_req(&doomed, None)),
                TransactionOp::Set(set_etag(&guarded, "\"g2\"", &stale)),
            ])
            .await;
        assert_eq!(res, Err(StateError::EtagMismatch));
        assert!(
            get(&store, &fresh).await.is_none(),
            "earlier set rolled back"
        );
        assert_eq!(value_of(&store, &doomed).await.unwrap(), "\"keep me\"");
        assert_eq!(value_of(&store, &guarded).await.unwrap(), "\"g1\"");

        // Same with a stale delete last.
        let res = store
            .transact(&[
                TransactionOp::Set(set_req(&fresh, "\"new\"")),
                TransactionOp::Delete(del_req(&guarded, Some(&stale))),
            ])
            .await;
        assert_eq!(res, Err(StateError::EtagMismatch));
        assert!(get(&store, &fresh).await.is_none());
        assert_eq!(value_of(&store, &guarded).await.unwrap(), "\"g1\"");

        // And a first-write on an existing key last.
        let res = store
            .transact(&[
                TransactionOp::Set(set_req(&fresh, "\"new\"")),
                TransactionOp::Set(SetRequest {
                    concurrency: Concurrency::FirstWrite,
                    ..set_req(&doomed, "\"again\"")
                }),
            ])
            .await;
        assert_eq!(res, Err(StateError::EtagMismatch));
        assert!(get(&store, &fresh).await.is_none());
        assert_eq!(value_of(&store, &doomed).await.unwrap(), "\"keep me\"");
    }

    pub async fn ttl_expiry(store: Arc<dyn StateStore>) {
        if !store.features().ttl {
            return;
        }
        let k = Keys::new();
        let (short, long) = (k.key("ttl-short"), k.key("ttl-long"));
        let ttl = |key: &str, secs| SetRequest {
            ttl: Some(Duration::from_secs(secs)),
            ..set_req(key, "\"ephemeral\"")
        };
        store.set(&ttl(&short, 1)).await.unwrap();
        store.set(&ttl(&long, 3600)).await.unwrap();

        let item = get(&store, &short).await.expect("present before expiry");
        assert_eq!(item.value, "\"ephemeral\"");
        let expires = item
            .metadata
            .get(TTL_EXPIRE_TIME_KEY)
            .expect("ttlExpireTime metadata");
        let expires = chrono::DateTime::parse_from_rfc3339(expires).expect("RFC 3339");
        let now = chrono::Utc::now();
        assert!(expires > now - chrono::Duration::seconds(1), "{expires}");
        assert!(expires < now + chrono::Duration::seconds(5), "{expires}");

        let item = get(&store, &long).await.unwrap();
        assert!(item.metadata.contains_key(TTL_EXPIRE_TIME_KEY));

        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert!(get(&store, &short).await.is_none(), "expired item is gone");
        let bulk = store.bulk_get(&[get_req(&short)], 1).await;
        assert!(bulk[0].result.clone().unwrap().is_none());
        assert!(get(&store, &long).await.is_some());

        // An expired key counts as missing for first-write.
        store
            .set(&SetRequest {
                concurrency: Concurrency::FirstWrite,
                ..set_req(&short, "\"reborn\"")
            })
            .await
            .unwrap();
        let item = get(&store, &short).await.unwrap();
        assert_eq!(item.value, "\"reborn\"");
        assert!(!item.metadata.contains_key(TTL_EXPIRE_TIME_KEY));
    }

    pub async fn large_values(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        const MIB: usize = 1024 * 1024;
        // A 1 MiB JSON string.
        let mut json = Vec::with_capacity(MIB);
        json.push(b'"');
        json.extend((0..MIB - 2).map(|i| b'a' + (i % 26) as u8));
        json.push(b'"');
        let key = k.key("big-json");
        store
            .set(&set_req(&key, Bytes::from(json.clone())))
            .await
            .unwrap();
        assert_eq!(value_of(&store, &key).await.unwrap(), json);

        // 1 MiB of binary noise.
        let mut x: u32 = 0x1234_5678;
        let noise: Vec<u8> = (0..MIB)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            })
            .collect();
        let key = k.key("big-bin");
        store
            .set(&set_req(&key, Bytes::from(noise.clone())))
            .await
            .unwrap();
        assert_eq!(value_of(&store, &key).await.unwrap(), noise);
    }

    pub async fn unicode(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let cases: [(&str, &str); 3] = [
            ("ключ-🔑-鍵", "\"héllo wörld 🌍 — 你好\""),
            ("spaces and/slashes?&=#%", "{\"emoji\":\"🎉\",\"ü\":[1,2]}"),
            ("tab\tnew\nline", "plain text, not JSON: ñ ✓"),
        ];
        for (name, value) in cases {
            let key = k.key(name);
            put(&store, &key, value.as_bytes()).await;
            let item = get(&store, &key).await.unwrap();
            assert_eq!(item.value, value.as_bytes(), "{name}");
            let etag = item.etag.unwrap();
            store.delete(&del_req(&key, Some(&etag))).await.unwrap();
            assert!(get(&store, &key).await.is_none());
        }
    }

    pub async fn binary_values(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let all_bytes: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
        let cases: [Vec<u8>; 4] = [
            all_bytes,
            vec![0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28],
            b"\x00\x00\x00".to_vec(),
            // Looks like base64 but must come back as these exact bytes.
            b"aGVsbG8=".to_vec(),
        ];
        for (i, value) in cases.into_iter().enumerate() {
            let key = k.key(&format!("bin-{i}"));
            store
                .set(&set_req(&key, Bytes::from(value.clone())))
                .await
                .unwrap();
            assert_eq!(value_of(&store, &key).await.unwrap(), value, "case {i}");
            // Still exact after the value goes through a transaction.
            if store.features().transactional {
                let mut v2 = value.clone();
                v2.push(0xff);
                store
                    .transact(&[TransactionOp::Set(set_req(&key, Bytes::from(v2.clone())))])
                    .await
                    .unwrap();
                assert_eq!(value_of(&store, &key).await.unwrap(), v2, "case {i}");
            }
        }
    }

    pub async fn delete_missing(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        store.delete(&del_req(&k.key("nope"), None)).await.unwrap();
        if store.features().transactional {
            store
                .transact(&[TransactionOp::Delete(del_req(&k.key("nope2"), None))])
                .await
                .unwrap();
        }
    }

    pub async fn delete_stale_etag(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let key = k.key("del");
        let stale = put(&store, &key, b"1").await;
        let current = put(&store, &key, b"2").await;
        assert_eq!(
            store.delete(&del_req(&key, Some(&stale))).await,
            Err(StateError::EtagMismatch)
        );
        assert_eq!(value_of(&store, &key).await.unwrap(), "2");
        store.delete(&del_req(&key, Some(&current))).await.unwrap();
        // A (formerly valid) etag for a key that is gone never matches.
        assert_eq!(
            store.delete(&del_req(&key, Some(&current))).await,
            Err(StateError::EtagMismatch)
        );
    }

    pub async fn query_prefix(store: Arc<dyn StateStore>) {
        let k = Keys::new();
        let q = query::Query::parse(
            br#"{"filter":{"EQ":{"kind":"fruit"}},"sort":[{"key":"name","order":"DESC"}]}"#,
        )
        .unwrap();
        if !store.features().query {
            assert!(matches!(
                store.query(k.prefix(), &q).await,
                Err(StateError::NotSupported(_))
            ));
            return;
        }
        for (name, kind) in [("apple", "fruit"), ("kale", "leaf"), ("pear", "fruit")] {
            put(
                &store,
                &k.key(name),
                format!(r#"{{"name":"{name}","kind":"{kind}"}}"#).as_bytes(),
            )
            .await;
        }
        // Same names under another prefix must not show up.
        let other = Keys::new();
        put(
            &store,
            &other.key("plum"),
            br#"{"name":"plum","kind":"fruit"}"#,
        )
        .await;

        let res = store.query(k.prefix(), &q).await.unwrap();
        let keys: Vec<&str> = res.results.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            ["pear", "apple"],
            "keys are returned without the prefix"
        );
        assert!(res.results.iter().all(|r| r.item.etag.is_some()));
    }
}

/// Expands the whole suite as `mod $name`, building the store under test with
/// `$factory` (an expression evaluating to a future of `Arc<dyn StateStore>`).
macro_rules! conformance_suite {
    ($name:ident, $factory:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn store() -> ::std::sync::Arc<dyn ::dapr_components::state::StateStore> {
                $factory.await
            }

            conformance_suite!(@tests
                crud, get_missing, etag_match, etag_mismatch, etag_invalid, first_write,
                concurrent_etag_writers, concurrent_first_writers, bulk_get, bulk_set_delete,
                transaction_commits, transaction_atomic, ttl_expiry, large_values, unicode,
                binary_values, delete_missing, delete_stale_etag, query_prefix
            );
        }
    };
    (@tests $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                crate::suite::$test(store().await).await;
            }
        )*
    };
}

// ---- store factories -------------------------------------------------------

async fn create(type_: &str, md: ComponentMetadata) -> Arc<dyn StateStore> {
    state::create(type_, &md)
        .await
        .unwrap_or_else(|e| panic!("creating {type_}: {e}"))
}

async fn create_in_memory() -> Arc<dyn StateStore> {
    create(
        "state.in-memory",
        ComponentMetadata::new("statestore", "conf"),
    )
    .await
}

conformance_suite!(in_memory, async { create_in_memory().await });

/// A store plus the temporary directory its files live in, removed when the
/// test drops the store.
struct InTempDir {
    store: Arc<dyn StateStore>,
    _dir: tempfile::TempDir,
}

#[async_trait::async_trait]
impl StateStore for InTempDir {
    fn features(&self) -> state::Features {
        self.store.features()
    }
    async fn get(&self, req: &GetRequest) -> Result<Option<StateItem>, StateError> {
        self.store.get(req).await
    }
    async fn bulk_get(&self, reqs: &[GetRequest], parallelism: usize) -> Vec<BulkGetItem> {
        self.store.bulk_get(reqs, parallelism).await
    }
    async fn set(&self, req: &SetRequest) -> Result<(), StateError> {
        self.store.set(req).await
    }
    async fn delete(&self, req: &DeleteRequest) -> Result<(), StateError> {
        self.store.delete(req).await
    }
    async fn transact(&self, ops: &[TransactionOp]) -> Result<(), StateError> {
        self.store.transact(ops).await
    }
    async fn bulk_set(&self, reqs: &[SetRequest]) -> Result<(), StateError> {
        self.store.bulk_set(reqs).await
    }
    async fn bulk_delete(&self, reqs: &[DeleteRequest]) -> Result<(), StateError> {
        self.store.bulk_delete(reqs).await
    }
    async fn query(
        &self,
        key_prefix: &str,
        q: &query::Query,
    ) -> Result<query::QueryResponse, StateError> {
        self.store.query(key_prefix, q).await
    }
    async fn ping(&self) -> Result<(), StateError> {
        self.store.ping().await
    }
}

async fn create_sqlite() -> Arc<dyn StateStore> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let md = ComponentMetadata::new("statestore", "conf")
        .with("connectionString", path.to_string_lossy().to_string());
    let store = create("state.sqlite", md).await;
    Arc::new(InTempDir { store, _dir: dir })
}

conformance_suite!(sqlite, async { create_sqlite().await });

/// Fails (never skips) with a hint when a test server is not running.
fn unreachable_server(what: &str, env: &str, e: impl std::fmt::Display) -> ! {
    panic!(
        "{what} test server unreachable ({e}). Run the tests with `scripts/test.sh` \
         (it starts the servers via scripts/test-services.sh), or set {env}."
    )
}

async fn create_postgres() -> Arc<dyn StateStore> {
    let conn = std::env::var("DAPR_RS_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=15432 user=postgres dbname=dapr_test".into());
    let md = ComponentMetadata::new("statestore", "conf").with("connectionString", conn);
    state::create("state.postgresql", &md)
        .await
        .unwrap_or_else(|e| unreachable_server("PostgreSQL", "DAPR_RS_TEST_POSTGRES", e))
}

conformance_suite!(postgres, async { create_postgres().await });

async fn create_mysql() -> Arc<dyn StateStore> {
    let dsn = std::env::var("DAPR_RS_TEST_MYSQL")
        .unwrap_or_else(|_| "root@tcp(127.0.0.1:13306)/dapr_test".into());
    let md = ComponentMetadata::new("statestore", "conf")
        .with("connectionString", dsn)
        .with("schemaName", "dapr_test");
    state::create("state.mysql", &md)
        .await
        .unwrap_or_else(|e| unreachable_server("MySQL/MariaDB", "DAPR_RS_TEST_MYSQL", e))
}

conformance_suite!(mysql, async { create_mysql().await });

/// Redis for the suite: `DAPR_RS_TEST_REDIS_ADDR` (host:port), by default
/// 127.0.0.1:16379.
async fn create_redis() -> Arc<dyn StateStore> {
    let addr =
        std::env::var("DAPR_RS_TEST_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:16379".to_owned());
    let md = ComponentMetadata::new("statestore", "conf")
        .with("redisHost", addr)
        .with("redisMaxRetries", "1")
        .with("dialTimeout", "2s");
    state::create("state.redis", &md)
        .await
        .unwrap_or_else(|e| unreachable_server("Redis", "DAPR_RS_TEST_REDIS_ADDR", e))
}

conformance_suite!(redis, async { create_redis().await });
