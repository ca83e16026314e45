//! Tier 1 (etcd + apiserver + controller-manager) of e2e/k8s/cluster.sh, exercised for real:
//! CRDs with schema defaulting/validation and `kubectl explain`, and ServiceAccount tokens with a
//! custom audience via TokenRequest + TokenReview (what Sentry's kubernetes validator relies on).

use std::time::Duration;

use dapr_e2e::{Cluster, E2eError, eventually, unique_name};
use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};

fn crd_yaml(group: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the widget should be.
            properties:
              size:
                type: integer
                minimum: 1
                description: How big the widget is, at least 1.
              color:
                type: string
                default: blue
          status:
            type: object
            properties:
              ready: {{type: boolean}}
"#
    )
}

#[tokio::test]
async fn crd_applies_defaults_validates_and_explains() -> Result<(), E2eError> {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    // Cluster-scoped and shared by every test binary: a group of its own.
    let group = format!("{}.e2e.dapr-rs.test", unique_name("g"));
    let crd = format!("widgets.{group}");
    cluster.apply(&crd_yaml(&group))?;
    let result = async {
        cluster.kubectl(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{crd}"),
            "--timeout=30s",
        ])?;
        let ns = cluster.namespace("tier1-crd")?;

        let w = format!(
            "apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w1}}\nspec: {{size: 3}}\n"
        );
        ns.apply(&w)?;
        let color = ns.kubectl(&[
            "get",
            &format!("widgets.{group}"),
            "w1",
            "-o",
            "jsonpath={.spec.color}",
        ])?;
        assert_eq!(color, "blue", "the schema default was not applied");

        let bad = w.replace("w1", "w2").replace("size: 3", "size: 0");
        match ns.apply(&bad) {
            Err(E2eError::Kubectl { stderr, .. }) => assert!(
                stderr.contains("spec.size") && stderr.contains("greater than or equal to 1"),
                "unexpected rejection: {stderr}"
            ),
            other => panic!("size 0 must be rejected by the schema, got {other:?}"),
        }

        // The CRD's schema reaches the published OpenAPI a moment after Established.
        let explained = eventually(
            "kubectl explain to know the CRD",
            Duration::from_secs(30),
            Duration::from_millis(500),
            || async {
                let out = cluster.kubectl(&[
                    "explain",
                    "widgets.spec.size",
                    "--api-version",
                    &format!("{group}/v1"),
                ])?;
                Ok::<_, E2eError>(out.contains("How big the widget is").then_some(out))
            },
        )
        .await?;
        assert!(explained.contains("integer"), "{explained}");
        Ok(())
    }
    .await;
    cluster.kubectl(&["delete", "crd", &crd, "--wait=false"])?;
    result
}

#[tokio::test]
async fn token_request_and_review_with_custom_audience() -> Result<(), E2eError> {
    let Some(cluster) = Cluster::tier1().await else {
        return Ok(());
    };
    let ns = cluster.namespace("tier1-token")?;
    ns.kubectl(&["create", "serviceaccount", "app"])?;
    let client = cluster.client();

    let audience = "dapr.io/sentry".to_string();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.clone()],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns.name());
    let minted: TokenRequest = sas
        .create_subresource("token", "app", &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    let token = minted.status.expect("TokenRequest status").token;
    assert_eq!(token.split('.').count(), 3, "a JWT");

    let reviews: Api<TokenReview> = Api::all(client);
    let review = |audiences: Vec<String>| {
        let reviews = reviews.clone();
        let token = token.clone();
        async move {
            let r = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token),
                    audiences: Some(audiences),
                },
                ..Default::default()
            };
            reviews
                .create(&PostParams::default(), &r)
                .await
                .expect("TokenReview")
                .status
                .expect("TokenReview status")
        }
    };

    let ok = review(vec![audience.clone()]).await;
    assert_eq!(ok.authenticated, Some(true), "{ok:?}");
    let user = ok.user.expect("user info");
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{}:app", ns.name()).as_str())
    );
    assert_eq!(ok.audiences, Some(vec![audience]));

    // The same token is not valid for another audience.
    let wrong = review(vec!["some-other-audience".into()]).await;
    assert_ne!(wrong.authenticated, Some(true), "{wrong:?}");
    Ok(())
}
