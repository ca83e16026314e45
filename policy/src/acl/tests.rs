use dapr_crds::{AppOperationSpec, AppPolicySpec, Resource, parse_documents};

use super::*;

fn op(name: &str, verbs: &[&str], action: &str) -> AppOperationSpec {
    AppOperationSpec {
        name: name.to_owned(),
        http_verb: verbs.iter().map(|v| (*v).to_owned()).collect(),
        action: action.to_owned(),
    }
}

fn policy(
    app: &str,
    default_action: &str,
    td: &str,
    ns: &str,
    ops: Vec<AppOperationSpec>,
) -> AppPolicySpec {
    AppPolicySpec {
        app_id: app.to_owned(),
        default_action: default_action.to_owned(),
        trust_domain: td.to_owned(),
        namespace: ns.to_owned(),
        operations: ops,
    }
}

/// The same shape as Dapr's own ACL fixture.
fn sample() -> AccessControl {
    AccessControl::from_spec(&AccessControlSpec {
        default_action: "deny".to_owned(),
        trust_domain: "abcd".to_owned(),
        policies: vec![
            policy(
                "app1",
                "allow",
                "public",
                "ns1",
                vec![
                    op("/op1", &["POST", "GET"], "allow"),
                    op("/op2", &["*"], "deny"),
                ],
            ),
            policy(
                "app2",
                "deny",
                "domain1",
                "ns2",
                vec![
                    op("/op3/a/*", &["PUT", "GET"], "allow"),
                    op("/op4", &["POST"], "allow"),
                ],
            ),
            policy(
                "app3",
                "",
                "domain1",
                "ns1",
                vec![op("/op5", &["POST"], "allow")],
            ),
            policy(
                "app4",
                "deny",
                "domain1",
                "ns2",
                vec![
                    op("/op6", &[], "allow"),
                    op("/op7/a/b/*", &[], "allow"),
                    op("/op7/a/b/c/f", &[], "allow"),
                    op("/op7/a/b*", &[], "allow"),
                    op("/op7/c/**", &[], "allow"),
                ],
            ),
            policy(
                "app1",
                "allow",
                "public",
                "ns4",
                vec![op("/op6", &["*"], "allow")],
            ),
        ],
    })
    .unwrap()
}

fn caller(app: &str, ns: &str, td: &str) -> CallerIdentity {
    CallerIdentity::new(app, ns, td)
}

#[test]
fn no_section_allows_everything() {
    let acl = AccessControl::from_configuration(None).unwrap();
    let d = acl.check(&caller("x", "y", "z"), "anything", Some("DELETE"));
    assert!(d.allowed);
    assert_eq!(acl.trust_domain(), "public");
    assert!(acl.check_unauthenticated().allowed);
}

#[test]
fn defaults_are_allow_and_public() {
    let acl = AccessControl::from_spec(&AccessControlSpec::default()).unwrap();
    assert_eq!(acl.default_action(), Action::Allow);
    assert_eq!(acl.trust_domain(), DEFAULT_TRUST_DOMAIN);
    let acl = sample();
    assert_eq!(acl.default_action(), Action::Deny);
    assert_eq!(acl.trust_domain(), "abcd");
}

#[test]
fn unknown_caller_gets_global_default() {
    let acl = sample();
    let d = acl.check(&caller("appX", "ns1", "public"), "op1", Some("POST"));
    assert!(!d.allowed);
    assert_eq!(d.action_policy, ActionPolicy::Global);
    assert!(
        d.reason.contains("no policy for app 'appX'"),
        "{}",
        d.reason
    );
    assert!(!acl.check_unauthenticated().allowed);
}

#[test]
fn trust_domain_mismatch_gets_global_default() {
    let acl = sample();
    let d = acl.check(&caller("app1", "ns1", "private"), "op1", Some("POST"));
    assert!(!d.allowed);
    assert_eq!(d.action_policy, ActionPolicy::Global);
    assert!(d.reason.contains("trust domain"), "{}", d.reason);
}

#[test]
fn namespace_mismatch_gets_global_default() {
    let acl = sample();
    let d = acl.check(&caller("app1", "abcd", "public"), "op1", Some("POST"));
    assert!(!d.allowed);
    assert_eq!(d.action_policy, ActionPolicy::Global);
}

#[test]
fn same_app_id_in_two_namespaces_are_separate_policies() {
    let acl = sample();
    // app1 in ns4 allows /op6 for every verb; app1 in ns1 has no /op6 rule but
    // allows by default.
    assert!(
        acl.check(&caller("app1", "ns4", "public"), "op6", Some("PUT"))
            .allowed
    );
    let d = acl.check(&caller("app1", "ns1", "public"), "op2", Some("GET"));
    assert!(!d.allowed, "ns1's /op2 rule denies every verb");
}

#[test]
fn unmatched_operation_uses_app_default() {
    let acl = sample();
    let d = acl.check(&caller("app1", "ns1", "public"), "opX", Some("POST"));
    assert!(d.allowed);
    assert_eq!(d.action_policy, ActionPolicy::App);
    assert!(d.reason.contains("no operation rule"), "{}", d.reason);
}

#[test]
fn verb_matching() {
    let acl = sample();
    let app2 = caller("app2", "ns2", "domain1");
    assert!(acl.check(&app2, "op4", Some("POST")).allowed, "listed verb");
    assert!(
        acl.check(&app2, "/op4", Some("post")).allowed,
        "verbs compare in any case"
    );
    let d = acl.check(&app2, "op4", Some("PUT"));
    assert!(!d.allowed, "unlisted verb falls back to app default (deny)");
    assert!(d.reason.contains("does not list PUT"), "{}", d.reason);

    let app1 = caller("app1", "ns1", "public");
    let d = acl.check(&app1, "op2", Some("PUT"));
    assert!(!d.allowed, "'*' covers every verb");
    assert!(d.reason.contains("any verb"), "{}", d.reason);

    // No app default: an unlisted verb falls back to the global default.
    let app3 = caller("app3", "ns1", "domain1");
    let d = acl.check(&app3, "op5", Some("PUT"));
    assert!(!d.allowed);
    assert_eq!(d.action_policy, ActionPolicy::Global);
    assert!(acl.check(&app3, "op5", Some("POST")).allowed);
}

#[test]
fn http_paths_are_case_insensitive_grpc_exact() {
    let acl = sample();
    let app1 = caller("app1", "ns1", "public");
    assert!(
        !acl.check(&app1, "Op2", Some("POST")).allowed,
        "matches /op2 → deny"
    );
    let app2 = caller("app2", "ns2", "domain1");
    assert!(
        acl.check(&app2, "op4", None).allowed,
        "gRPC takes the rule's action"
    );
    assert!(
        !acl.check(&app2, "/OP4", None).allowed,
        "gRPC is case-sensitive"
    );
}

#[test]
fn glob_and_wildcard_paths() {
    let acl = sample();
    let app2 = caller("app2", "ns2", "domain1");
    assert!(
        acl.check(&app2, "/op3/a", Some("PUT")).allowed,
        "trailing * matches nothing"
    );
    assert!(acl.check(&app2, "/op3/a/b", Some("PUT")).allowed);
    assert!(!acl.check(&app2, "/op3/b/b", Some("PUT")).allowed);
    assert!(
        !acl.check(&app2, "/op3/a/b/c", Some("PUT")).allowed,
        "* is one segment"
    );

    let app4 = caller("app4", "ns2", "domain1");
    assert!(acl.check(&app4, "op6", None).allowed);
    assert!(acl.check(&app4, "op7/a/b/c", None).allowed);
    assert!(!acl.check(&app4, "op7/a/b/c/d", None).allowed);
    assert!(acl.check(&app4, "op7/a/b/c/f", None).allowed);
    assert!(
        acl.check(&app4, "op7/a/bc", None).allowed,
        "segment glob b*"
    );
    assert!(acl.check(&app4, "op7/c/d/e", None).allowed, "** any depth");
    assert!(!acl.check(&app4, "op8", None).allowed);
}

#[test]
fn rule_without_verbs_applies_to_grpc_only() {
    let acl = sample();
    let app4 = caller("app4", "ns2", "domain1");
    assert!(acl.check(&app4, "op6", None).allowed);
    let d = acl.check(&app4, "op6", Some("GET"));
    assert!(
        !d.allowed,
        "HTTP needs the verb listed; falls back to app default deny"
    );
}

#[test]
fn rejects_bad_actions_naming_the_field() {
    let mut spec = AccessControlSpec {
        default_action: "permit".to_owned(),
        ..Default::default()
    };
    let err = AccessControl::from_spec(&spec).unwrap_err();
    assert_eq!(err.field, "defaultAction");
    assert!(err.to_string().contains("'permit'"), "{err}");

    spec.default_action = "DENY".to_owned();
    spec.policies = vec![policy("a", "maybe", "public", "default", vec![])];
    let err = AccessControl::from_spec(&spec).unwrap_err();
    assert_eq!(err.field, "policies[0].defaultAction");

    spec.policies = vec![policy(
        "a",
        "",
        "public",
        "default",
        vec![op("/x", &["GET"], "allow"), op("/y", &["GET"], "nope")],
    )];
    let err = AccessControl::from_spec(&spec).unwrap_err();
    assert_eq!(err.field, "policies[0].operations[1].action");

    spec.policies = vec![policy(
        "a",
        "",
        "public",
        "default",
        vec![op("/y", &["GET"], "")],
    )];
    let err = AccessControl::from_spec(&spec).unwrap_err();
    assert_eq!(err.field, "policies[0].operations[0].action");
}

#[test]
fn rejects_incomplete_policies() {
    for (p, field) in [
        (policy("", "", "public", "ns", vec![]), "policies[0].appId"),
        (policy("a", "", "", "ns", vec![]), "policies[0].trustDomain"),
        (
            policy("a", "", "public", "", vec![]),
            "policies[0].namespace",
        ),
        (
            policy("a", "", "public", "ns", vec![op("", &[], "allow")]),
            "policies[0].operations[0].name",
        ),
        (
            policy(
                "a",
                "",
                "public",
                "ns",
                vec![op("/x", &["GET", "FETCH"], "allow")],
            ),
            "policies[0].operations[0].httpVerb[1]",
        ),
    ] {
        let spec = AccessControlSpec {
            policies: vec![p],
            ..Default::default()
        };
        let err = AccessControl::from_spec(&spec).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}

#[test]
fn action_parsing_is_case_insensitive() {
    let spec = AccessControlSpec {
        default_action: "Deny".to_owned(),
        policies: vec![policy(
            "a",
            "ALLOW",
            "public",
            "ns",
            vec![op("/x", &["get"], "Deny")],
        )],
        ..Default::default()
    };
    let acl = AccessControl::from_spec(&spec).unwrap();
    let a = caller("a", "ns", "public");
    assert!(!acl.check(&a, "/x", Some("GET")).allowed);
    assert!(acl.check(&a, "/y", Some("GET")).allowed);
}

#[test]
fn parses_from_a_configuration_document() {
    let text = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
spec:
  accessControl:
    defaultAction: deny
    trustDomain: "public"
    policies:
    - appId: app1
      defaultAction: deny
      trustDomain: 'public'
      namespace: "default"
      operations:
      - name: /op1
        httpVerb: ['POST', 'GET']
        action: deny
      - name: /op2/*
        httpVerb: ["*"]
        action: allow
    - appId: app2
      defaultAction: allow
      trustDomain: 'public'
      namespace: "default"
"#;
    let resources = parse_documents(text).unwrap();
    let Some(Resource::Configuration(config)) = resources.first() else {
        panic!("not a configuration: {resources:?}");
    };
    let spec = config.spec.access_control.as_ref().unwrap();
    assert_eq!(spec.policies.len(), 2);
    assert_eq!(
        spec.policies[0].operations[0].http_verb,
        vec!["POST", "GET"]
    );
    let acl = AccessControl::from_configuration(Some(spec)).unwrap();
    let app1 = caller("app1", "default", "public");
    assert!(!acl.check(&app1, "/op1", Some("GET")).allowed);
    assert!(acl.check(&app1, "/op2/x", Some("DELETE")).allowed);
    assert!(!acl.check(&app1, "/op3", Some("GET")).allowed);
    assert!(
        acl.check(&caller("app2", "default", "public"), "/x", Some("GET"))
            .allowed
    );
    assert!(
        !acl.check(&caller("app3", "default", "public"), "/x", Some("GET"))
            .allowed
    );
}

#[test]
fn spiffe_ids() {
    let c = CallerIdentity::from_spiffe_id("spiffe://public/ns/default/app1").unwrap();
    assert_eq!(c, caller("app1", "default", "public"));
    assert_eq!(c.spiffe_id(), "spiffe://public/ns/default/app1");
    for bad in [
        "spiffe://public/ns/default",
        "spiffe://public/xx/default/app",
        "http://public/ns/default/app",
        "spiffe://public/ns/default/app/extra",
        "spiffe:///ns/default/app",
    ] {
        assert!(CallerIdentity::from_spiffe_id(bad).is_none(), "{bad}");
    }
    assert_eq!(
        denial_message(Some(&c), "/op1", Some("get")),
        "access control policy has denied access to id: spiffe://public/ns/default/app1 operation: /op1 verb: GET"
    );
    assert!(denial_message(None, "m", None).ends_with("operation: m verb: NONE"));
}

#[test]
fn method_normalization() {
    for (input, expected) in [
        ("/admin/../public", "/public"),
        ("admin/../../x", "x"),
        ("../../etc", "etc"),
        ("/a//b/./c/", "/a/b/c"),
        ("..", ""),
        (".", ""),
        ("", ""),
        ("/", "/"),
        ("/..", "/"),
        ("method", "method"),
    ] {
        assert_eq!(normalize_method(input).unwrap(), expected, "{input}");
    }
    for bad in ["a#b", "a?b", "a\0b", "a\nb", "a\x7fb"] {
        assert!(normalize_method(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn verb_not_listed_falls_back_to_the_app_default() {
    let spec: dapr_crds::AccessControlSpec = serde_json::from_value(serde_json::json!({
        "defaultAction": "deny",
        "trustDomain": "public",
        "policies": [{
            "appId": "caller",
            "defaultAction": "deny",
            "trustDomain": "public",
            "namespace": "default",
            "operations": [{"name": "/allowed/**", "httpVerb": ["POST"], "action": "allow"}]
        }]
    }))
    .unwrap();
    let acl = AccessControl::from_spec(&spec).unwrap();
    let caller = CallerIdentity::new("caller", "default", "public");
    assert!(acl.check(&caller, "allowed/x", Some("POST")).allowed);
    assert!(!acl.check(&caller, "allowed/x", Some("GET")).allowed);
    assert!(!acl.check(&caller, "secret", Some("POST")).allowed);
}
