//! `nameresolution.mdns`: sidecars announce `_dapr._tcp.local.` instances
//! (TXT `appid`, `namespace`) and browse for each other; several instances
//! of one app id are load-balanced round-robin.
//!
//! Metadata `interfaces: loopback` keeps every packet on 127.0.0.0/8 (what
//! tests use); the default is every interface, as in Dapr.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};

use super::{Instance, NameResolutionError, NameResolver};
use crate::ComponentMetadata;

const SERVICE_TYPE: &str = "_dapr._tcp.local.";
/// How long a first lookup of an unknown app waits for announcements.
const FIRST_LOOKUP_WAIT: Duration = Duration::from_millis(1500);

/// fullname → (app id, namespace, address).
type Discovered = HashMap<String, (String, String, String)>;

pub struct MdnsResolver {
    daemon: ServiceDaemon,
    discovered: Arc<Mutex<Discovered>>,
    registered: Mutex<Option<String>>,
    next: AtomicUsize,
    loopback_only: bool,
}

fn backend(e: impl std::fmt::Display) -> NameResolutionError {
    NameResolutionError::Backend(e.to_string())
}

impl MdnsResolver {
    pub fn new(metadata: &ComponentMetadata) -> Result<Self, NameResolutionError> {
        let daemon = ServiceDaemon::new().map_err(backend)?;
        let loopback_only = metadata
            .get("interfaces")
            .is_some_and(|v| v.eq_ignore_ascii_case("loopback"));
        if loopback_only {
            daemon.disable_interface(IfKind::All).map_err(backend)?;
            daemon
                .enable_interface(IfKind::LoopbackV4)
                .map_err(backend)?;
        }
        let events = daemon.browse(SERVICE_TYPE).map_err(backend)?;
        let discovered: Arc<Mutex<Discovered>> = Arc::default();
        let sink = discovered.clone();
        // The daemon delivers events on a channel; a plain thread keeps the
        // table current without tying it to any async runtime.
        std::thread::Builder::new()
            .name("mdns-browse".into())
            .spawn(move || {
                while let Ok(event) = events.recv() {
                    let mut table = sink.lock().unwrap_or_else(PoisonError::into_inner);
                    match event {
                        ServiceEvent::ServiceResolved(info) => {
                            let app = info
                                .get_property_val_str("appid")
                                .unwrap_or_default()
                                .to_owned();
                            let ns = info
                                .get_property_val_str("namespace")
                                .unwrap_or_default()
                                .to_owned();
                            if let Some(ip) = info.get_addresses_v4().into_iter().next() {
                                let address = format!("{ip}:{}", info.get_port());
                                table.insert(info.get_fullname().to_owned(), (app, ns, address));
                            }
                        }
                        ServiceEvent::ServiceRemoved(_, fullname) => {
                            table.remove(&fullname);
                        }
                        _ => {}
                    }
                }
            })
            .map_err(backend)?;
        Ok(Self {
            daemon,
            discovered,
            registered: Mutex::new(None),
            next: AtomicUsize::new(0),
            loopback_only,
        })
    }

    fn lookup(&self, app_id: &str, namespace: &str) -> Vec<String> {
        let table = self
            .discovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let set: HashSet<&String> = table
            .values()
            .filter(|(a, n, _)| a == app_id && n == namespace)
            .map(|(_, _, addr)| addr)
            .collect();
        let mut v: Vec<String> = set.into_iter().cloned().collect();
        v.sort();
        v
    }
}

#[async_trait]
impl NameResolver for MdnsResolver {
    async fn register(&self, instance: &Instance) -> Result<(), NameResolutionError> {
        let (host, port) = instance.address.rsplit_once(':').ok_or_else(|| {
            NameResolutionError::Backend(format!("bad address {}", instance.address))
        })?;
        let port: u16 = port.parse().map_err(backend)?;
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{}-{}", instance.app_id, &unique[..8]);
        let hostname = format!("dapr-{}.local.", &unique[..12]);
        let host = if self.loopback_only {
            "127.0.0.1"
        } else {
            host
        };
        let props = [
            ("appid", instance.app_id.as_str()),
            ("namespace", instance.namespace.as_str()),
        ];
        let info = ServiceInfo::new(SERVICE_TYPE, &name, &hostname, host, port, &props[..])
            .map_err(backend)?;
        let fullname = info.get_fullname().to_owned();
        self.daemon.register(info).map_err(backend)?;
        *self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(fullname);
        Ok(())
    }

    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<String, NameResolutionError> {
        let mut found = self.lookup(app_id, namespace);
        if found.is_empty() {
            let deadline = tokio::time::Instant::now() + FIRST_LOOKUP_WAIT;
            while found.is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(25)).await;
                found = self.lookup(app_id, namespace);
            }
        }
        if found.is_empty() {
            return Err(NameResolutionError::NotFound(app_id.to_owned()));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % found.len();
        Ok(found[i].clone())
    }

    async fn unregister(&self) -> Result<(), NameResolutionError> {
        let name = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(name) = name {
            let _ = self.daemon.unregister(&name).map_err(backend)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_instances_find_each_other_on_loopback() {
        let md = ComponentMetadata::new("mdns", "a").with("interfaces", "loopback");
        let a = MdnsResolver::new(&md).unwrap();
        let b = MdnsResolver::new(&md).unwrap();
        let app = format!("orders{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        a.register(&Instance {
            app_id: app.clone(),
            namespace: String::new(),
            address: "127.0.0.1:41001".into(),
        })
        .await
        .unwrap();
        let got = b.resolve(&app, "").await;
        assert_eq!(
            got.as_deref(),
            Ok("127.0.0.1:41001"),
            "mDNS over loopback needs `ip link set lo multicast on`"
        );
        a.unregister().await.unwrap();
    }
}
