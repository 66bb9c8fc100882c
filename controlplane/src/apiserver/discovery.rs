//! Discovery documents: aggregated (`apidiscovery.k8s.io` v2 and v2beta1) and legacy
//! (`APIVersions`, `APIGroupList`, `APIGroup`, `APIResourceList`), built from the registry.

use serde_json::{Value, json};

use super::registry::{self, RESOURCES, ResourceType, Subresource};

/// The content type of an aggregated v2 document; kubectl rejects plain JSON here.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// The same for v2beta1, the only one kubectl 1.27–1.29 ask for.
pub const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// The form of discovery a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aggregated, `apidiscovery.k8s.io/v2`.
    V2,
    /// Aggregated, `apidiscovery.k8s.io/v2beta1`.
    V2Beta1,
    /// Legacy `APIVersions` / `APIGroupList`.
    Legacy,
}

impl Format {
    /// The first acceptable form in an `Accept` header.
    pub fn negotiate(accept: &str) -> Format {
        for entry in accept.split(',') {
            let params: Vec<&str> = entry.split(';').map(str::trim).collect();
            let has = |p: &str| params.contains(&p);
            if has("as=APIGroupDiscoveryList") && has("g=apidiscovery.k8s.io") {
                if has("v=v2") {
                    return Format::V2;
                }
                if has("v=v2beta1") {
                    return Format::V2Beta1;
                }
            } else if params
                .first()
                .is_some_and(|m| *m == "application/json" || *m == "*/*")
            {
                return Format::Legacy;
            }
        }
        Format::Legacy
    }

    /// The response content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::V2 => AGGREGATED_V2,
            Format::V2Beta1 => AGGREGATED_V2BETA1,
            Format::Legacy => "application/json",
        }
    }
}

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

fn scope(r: &ResourceType) -> &'static str {
    if r.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

fn sub_kind(r: &ResourceType, sub: Subresource) -> Value {
    match sub {
        Subresource::Status => json!({"group": r.group, "version": r.version, "kind": r.kind}),
        Subresource::Scale => json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
        Subresource::Binding => json!({"group": "", "version": "v1", "kind": "Binding"}),
        Subresource::Eviction => json!({"group": "policy", "version": "v1", "kind": "Eviction"}),
        Subresource::Finalize => json!({"group": "", "version": "v1", "kind": "Namespace"}),
        Subresource::Log => json!({"group": "", "version": "v1", "kind": "Pod"}),
        Subresource::Exec => json!({"group": "", "version": "v1", "kind": "PodExecOptions"}),
        Subresource::Attach => json!({"group": "", "version": "v1", "kind": "PodAttachOptions"}),
        Subresource::PortForward => {
            json!({"group": "", "version": "v1", "kind": "PodPortForwardOptions"})
        }
    }
}

fn aggregated_resource(r: &ResourceType) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| json!({"subresource": s.as_str(), "responseKind": sub_kind(r, *s), "verbs": s.verbs()}))
        .collect();
    json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": scope(r),
        "singularResource": r.singular,
        "verbs": VERBS,
        "shortNames": r.short_names,
        "categories": r.categories,
        "subresources": subresources,
    })
}

/// The aggregated document of the core group (`core = true`, for `/api`) or of every
/// named group (for `/apis`).
pub fn aggregated(format: Format, core: bool) -> Value {
    let api_version = match format {
        Format::V2Beta1 => "apidiscovery.k8s.io/v2beta1",
        _ => "apidiscovery.k8s.io/v2",
    };
    let groups: Vec<Value> = registry::group_versions()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, version)| {
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .map(aggregated_resource)
                .collect();
            json!({"metadata": {"name": group},
                   "versions": [{"version": version, "resources": resources, "freshness": "Current"}]})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": groups})
}

/// Legacy `GET /api`.
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

fn api_group(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// Legacy `GET /apis`.
pub fn groups() -> Value {
    let groups: Vec<Value> = registry::group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| api_group(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Legacy `GET /apis/{group}`, if the group is served.
pub fn group(name: &str) -> Option<Value> {
    let (g, v) = registry::group_versions()
        .into_iter()
        .find(|(g, _)| !g.is_empty() && *g == name)?;
    let mut doc = api_group(g, v);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// Legacy `GET /api/v1` or `/apis/{group}/{version}`, if served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resources.push(json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": VERBS, "shortNames": r.short_names, "categories": r.categories,
        }));
        for sub in r.subresources {
            let kind = sub_kind(r, *sub);
            resources.push(json!({
                "name": format!("{}/{}", r.plural, sub.as_str()), "singularName": "",
                "namespaced": r.namespaced, "kind": kind["kind"], "group": kind["group"],
                "version": kind["version"], "verbs": sub.verbs(),
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_the_first_acceptable() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(Format::negotiate(kubectl), Format::V2);
        let old = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(Format::negotiate(old), Format::V2Beta1);
        assert_eq!(Format::negotiate("application/json, */*"), Format::Legacy);
        assert_eq!(Format::V2.content_type(), AGGREGATED_V2);
    }

    #[test]
    fn aggregated_core_lists_pods_with_short_names_categories_and_subresources() {
        let doc = aggregated(Format::V2, true);
        assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(doc["items"].as_array().unwrap().len(), 1);
        let resources = doc["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap();
        let pods = resources.iter().find(|r| r["resource"] == "pods").unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(pods["subresources"][0]["subresource"], "status");
        // The stream subresources, with the verbs kube-apiserver lists for them.
        let sub = |name: &str| {
            pods["subresources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["subresource"] == name)
                .cloned()
                .unwrap_or_else(|| panic!("no pods/{name}"))
        };
        assert_eq!(sub("log")["verbs"], json!(["get"]));
        assert_eq!(sub("log")["responseKind"]["kind"], "Pod");
        for (name, kind) in [
            ("exec", "PodExecOptions"),
            ("attach", "PodAttachOptions"),
            ("portforward", "PodPortForwardOptions"),
        ] {
            assert_eq!(sub(name)["verbs"], json!(["create", "get"]), "{name}");
            assert_eq!(sub(name)["responseKind"]["kind"], kind);
        }
        let groups = aggregated(Format::V2Beta1, false);
        assert_eq!(groups["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        let apps = groups["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = &apps["versions"][0]["resources"][0];
        assert_eq!(deploy["resource"], "deployments");
        assert_eq!(deploy["subresources"][0]["responseKind"]["kind"], "Scale");
    }

    #[test]
    fn legacy_documents() {
        assert_eq!(core_versions()["versions"], json!(["v1"]));
        assert_eq!(groups()["groups"].as_array().unwrap().len(), 3);
        assert_eq!(
            group("apps").unwrap()["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
        assert!(group("batch").is_none());
        let v1 = resource_list("", "v1").unwrap();
        let names: Vec<&str> = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods/status") && names.contains(&"configmaps"));
        assert!(resource_list("apps", "v2").is_none());
    }
}
