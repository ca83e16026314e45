//! `configuration.postgresql` through a real daprd and the test PostgreSQL:
//! get, and a gRPC subscription fed by the LISTEN/NOTIFY trigger Dapr
//! documents. Tables are created with `psql`.

mod common;

use std::{process::Command, time::Duration};

use common::*;
use dapr_rs_proto::runtime as pb;

const CONN: &str = "host=127.0.0.1 port=15432 user=postgres dbname=dapr_test";

fn psql(sql: &str) {
    let out = Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-q", CONN, "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn postgres_get_and_subscribe() {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let table = format!("cfg_{suffix}");
    let channel = format!("cfgch_{suffix}");
    psql(&format!(
        "CREATE TABLE {table} (key VARCHAR NOT NULL, value VARCHAR NOT NULL, version VARCHAR NOT NULL, metadata JSON);
         CREATE OR REPLACE FUNCTION {table}_notify() RETURNS TRIGGER AS $$
         DECLARE data json; notification json;
         BEGIN
           IF (TG_OP = 'DELETE') THEN data = row_to_json(OLD); ELSE data = row_to_json(NEW); END IF;
           notification = json_build_object('table', TG_TABLE_NAME, 'action', TG_OP, 'data', data);
           PERFORM pg_notify('{channel}', notification::text);
           RETURN NULL;
         END; $$ LANGUAGE plpgsql;
         CREATE TRIGGER {table}_trg AFTER INSERT OR UPDATE OR DELETE ON {table}
           FOR EACH ROW EXECUTE PROCEDURE {table}_notify();
         INSERT INTO {table} VALUES ('greeting', 'hello', '1', '{{\"env\":\"test\"}}');"
    ));
    let dir = tempfile::tempdir().unwrap();
    write_resource(
        dir.path(),
        "pg.yaml",
        &component_yaml(
            "pgconfig",
            "configuration.postgresql",
            &[("connectionString", CONN), ("table", &table)],
        ),
    );
    let d = DaprdBuilder::new("cfg-pg")
        .resources(dir.path())
        .start()
        .await;

    let r = http(
        "GET",
        &d.url("/v1.0/configuration/pgconfig?key=greeting"),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["greeting"]["value"], "hello");
    assert_eq!(j["greeting"]["version"], "1");
    assert_eq!(j["greeting"]["metadata"]["env"], "test");

    let mut c = pb::dapr_client::DaprClient::connect(d.grpc_endpoint())
        .await
        .unwrap();
    // Without pgNotifyChannel the subscription is refused.
    let e = c
        .subscribe_configuration(pb::SubscribeConfigurationRequest {
            store_name: "pgconfig".into(),
            keys: vec!["greeting".into()],
            metadata: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal);

    let mut stream = c
        .subscribe_configuration(pb::SubscribeConfigurationRequest {
            store_name: "pgconfig".into(),
            keys: vec!["greeting".into()],
            metadata: [("pgNotifyChannel".to_owned(), channel.clone())].into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(!first.id.is_empty());
    psql(&format!(
        "INSERT INTO {table} VALUES ('other', 'x', '1', NULL)"
    ));
    psql(&format!(
        "UPDATE {table} SET value = 'bonjour', version = '2' WHERE key = 'greeting'"
    ));
    let update = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("no update within 5 s")
        .unwrap()
        .unwrap();
    // Only the subscribed key arrives.
    assert_eq!(update.items.len(), 1, "{update:?}");
    assert_eq!(update.items["greeting"].value, "bonjour");
    assert_eq!(update.items["greeting"].version, "2");
    psql(&format!(
        "DROP TABLE {table}; DROP FUNCTION {table}_notify()"
    ));
}
