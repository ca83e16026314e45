//! Topic scopes from a pub/sub component's metadata, as Dapr reads them:
//! `publishingScopes` / `subscriptionScopes` (`app1=t1,t2;app2=`),
//! `allowedTopics` and `protectedTopics` (comma lists).

use dapr_components::ComponentMetadata;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicScopes {
    allowed: Vec<String>,
    protected: Vec<String>,
    publishing: Vec<String>,
    subscribing: Vec<String>,
}

fn topic_list(value: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        for t in v.replace(' ', "").split(',') {
            if !out.iter().any(|o| o == t) {
                out.push(t.to_owned());
            }
        }
    }
    out
}

/// The topics `app_id` is granted in a `app=t1,t2;other=t3` value. An app
/// listed with nothing after `=` gets the empty topic only, i.e. none.
fn scoped_topics(value: Option<&str>, app_id: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return out;
    };
    for entry in v.replace(' ', "").split(';') {
        let Some((app, topics)) = entry.split_once('=') else {
            continue;
        };
        if app != app_id {
            continue;
        }
        for t in topics.split(',') {
            if !out.iter().any(|o| o == t) {
                out.push(t.to_owned());
            }
        }
    }
    out
}

impl TopicScopes {
    pub fn from_metadata(md: &ComponentMetadata, app_id: &str) -> Self {
        Self {
            allowed: topic_list(md.get("allowedTopics")),
            protected: topic_list(md.get("protectedTopics")),
            publishing: scoped_topics(md.get("publishingScopes"), app_id),
            subscribing: scoped_topics(md.get("subscriptionScopes"), app_id),
        }
    }

    pub fn can_publish(&self, topic: &str) -> bool {
        self.allowed_with(topic, &self.publishing)
    }

    pub fn can_subscribe(&self, topic: &str) -> bool {
        self.allowed_with(topic, &self.subscribing)
    }

    fn allowed_with(&self, topic: &str, scoped: &[String]) -> bool {
        if !self.allowed.is_empty() && !self.allowed.iter().any(|t| t == topic) {
            return false;
        }
        let protected = self.protected.iter().any(|t| t == topic);
        if !protected && scoped.is_empty() {
            return true;
        }
        scoped.iter().any(|t| t == topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(pairs: &[(&str, &str)], app: &str) -> TopicScopes {
        let mut md = ComponentMetadata::new("p", app);
        for (k, v) in pairs {
            md.insert(k, *v);
        }
        TopicScopes::from_metadata(&md, app)
    }

    #[test]
    fn publishing_scopes() {
        let s = scopes(&[("publishingScopes", "app1=a,b;app2=")], "app1");
        assert!(s.can_publish("a") && s.can_publish("b") && !s.can_publish("c"));
        assert!(s.can_subscribe("c"));
        let s = scopes(&[("publishingScopes", "app1=a,b;app2=")], "app2");
        assert!(!s.can_publish("a"));
        let s = scopes(&[("publishingScopes", "app1=a")], "app3");
        assert!(s.can_publish("anything"));
    }

    #[test]
    fn allowed_and_protected_topics() {
        let s = scopes(&[("allowedTopics", "a, b")], "x");
        assert!(s.can_publish("a") && s.can_subscribe("b") && !s.can_publish("c"));
        let s = scopes(
            &[
                ("protectedTopics", "secret"),
                ("subscriptionScopes", "x=secret"),
            ],
            "x",
        );
        assert!(!s.can_publish("secret") && s.can_subscribe("secret"));
        assert!(s.can_publish("open"));
    }
}
