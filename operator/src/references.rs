//! Which fleets name which Secrets and Services in their spec, kept up to date from the fleets'
//! watch. An event of a Secret or Service looks up the fleets to wake here: scanning every fleet
//! (and deriving the names each one uses) on every such event grew with the number of fleets.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};

use kube::ResourceExt;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use crate::crd::WebSocketService;
use crate::names::ChildNames;
use crate::plan::tls_secret_name;

type Guarded = DeserializeGuard<WebSocketService>;

/// A kind of object a fleet's spec names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Secret,
    Service,
}

/// An object a fleet names: its kind, namespace and name.
type Named = (Kind, String, String);

/// The fleets' references, shared between the fleets' watch and the mappers that read them.
#[derive(Clone, Default)]
pub struct References {
    inner: Arc<Mutex<Tables>>,
}

#[derive(Default)]
struct Tables {
    current: Index,
    /// Being rebuilt by a relist; it replaces `current` once the relist is done, as the fleets'
    /// cache does.
    relisting: Option<Index>,
}

#[derive(Default)]
struct Index {
    /// What each fleet names, to take it out again when the fleet changes or goes.
    by_fleet: HashMap<ObjectRef<Guarded>, Vec<Named>>,
    /// The fleets that name each object.
    fleets: HashMap<Named, Vec<ObjectRef<Guarded>>>,
}

impl Index {
    fn put(&mut self, guard: &Guarded) {
        let fleet = ObjectRef::from_obj(guard);
        self.remove(&fleet);
        let named = names_of(guard);
        for object in &named {
            self.fleets
                .entry(object.clone())
                .or_default()
                .push(fleet.clone());
        }
        self.by_fleet.insert(fleet, named);
    }

    fn remove(&mut self, fleet: &ObjectRef<Guarded>) {
        for object in self.by_fleet.remove(fleet).into_iter().flatten() {
            if let Entry::Occupied(mut fleets) = self.fleets.entry(object) {
                fleets.get_mut().retain(|named_by| named_by != fleet);
                if fleets.get().is_empty() {
                    fleets.remove();
                }
            }
        }
    }
}

impl References {
    /// Called with each event of the fleets' watch.
    pub fn saw(&self, event: &Event<Guarded>) {
        let mut tables = self.lock();
        match event {
            Event::Apply(guard) => tables.current.put(guard),
            Event::Delete(guard) => tables.current.remove(&ObjectRef::from_obj(guard)),
            Event::Init => tables.relisting = Some(Index::default()),
            Event::InitApply(guard) => tables.relisting.get_or_insert_default().put(guard),
            Event::InitDone => {
                if let Some(relisted) = tables.relisting.take() {
                    tables.current = relisted;
                }
            }
        }
    }

    /// The fleets whose spec names the `kind` object `namespace/name`.
    pub fn fleets_naming(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Vec<ObjectRef<Guarded>> {
        let object = (kind, namespace.to_owned(), name.to_owned());
        self.lock()
            .current
            .fleets
            .get(&object)
            .cloned()
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Everything `guard` names: its Secrets ([`secrets_named`]) and its upstream Service.
fn names_of(guard: &Guarded) -> Vec<Named> {
    let Ok(wss) = &guard.0 else {
        return Vec::new();
    };
    let namespace = wss.namespace().unwrap_or_default();
    let secrets = secrets_named(wss)
        .into_iter()
        .map(|name| (Kind::Secret, namespace.clone(), name));
    let service = wss.spec.upstream.service.clone();
    let service = service.map(|name| (Kind::Service, namespace.clone(), name));
    secrets.chain(service).collect()
}

/// The Secrets `wss` uses: its TLS Secret (the user's, or the one it issues, which another fleet
/// may hold until its owner is deleted), the JWT key and the JWKS provider's CA.
pub fn secrets_named(wss: &WebSocketService) -> Vec<String> {
    let tls = wss
        .spec
        .tls
        .as_ref()
        .and_then(|tls| tls_secret_name(tls, &ChildNames::of(wss)));
    let jwt = wss.spec.auth.as_ref().and_then(|auth| auth.jwt.as_ref());
    let jwt_key = jwt.and_then(|jwt| jwt.key_secret_ref.as_ref());
    let jwks_ca = jwt
        .and_then(|jwt| jwt.jwks.as_ref())
        .and_then(|jwks| jwks.ca_secret_ref.as_ref());
    let jwt_secrets = jwt_key.into_iter().chain(jwks_ca);
    tls.into_iter()
        .chain(jwt_secrets.map(|secret| secret.name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{example, wss};

    fn guard(wss: &WebSocketService) -> Guarded {
        DeserializeGuard(Ok(wss.clone()))
    }

    fn names(found: Vec<ObjectRef<Guarded>>) -> Vec<String> {
        let mut names: Vec<String> = found.into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    fn upstream(references: &References) -> Vec<String> {
        names(references.fleets_naming(Kind::Service, "team-a", "chat-backend"))
    }

    #[test]
    fn tls_and_jwt_secrets_are_named() {
        let named = secrets_named;
        assert_eq!(named(&example("user-tls.yaml")), ["chat-user-tls"]);
        assert_eq!(
            named(&example("production.yaml")),
            ["chat-prod-tls", "chat-jwt"]
        );
        let default_name =
            wss("metadata: {name: edge}\nspec:\n  upstream: {url: 'ws://b:1/'}\n  tls: {}\n");
        assert_eq!(named(&default_name), ["edge-tls"]);
        assert!(named(&example("oidc-jwks.yaml")).contains(&"id-example-ca".to_owned()));
        assert!(named(&example("minimal.yaml")).is_empty());
    }

    #[test]
    fn a_fleet_is_found_under_what_it_names_now_and_not_once_deleted() {
        let references = References::default();
        let mut fleet = example("minimal.yaml");
        references.saw(&Event::Apply(guard(&fleet)));
        assert_eq!(upstream(&references), ["chat"]);
        fleet.spec.upstream.service = Some("chat-backend-v2".to_owned());
        references.saw(&Event::Apply(guard(&fleet)));
        assert!(upstream(&references).is_empty(), "renamed");
        assert_eq!(
            names(references.fleets_naming(Kind::Service, "team-a", "chat-backend-v2")),
            ["chat"]
        );
        assert!(
            references
                .fleets_naming(Kind::Secret, "team-a", "chat-backend-v2")
                .is_empty(),
            "kinds are apart"
        );
        references.saw(&Event::Delete(guard(&fleet)));
        assert!(
            references
                .fleets_naming(Kind::Service, "team-a", "chat-backend-v2")
                .is_empty()
        );
    }

    #[test]
    fn a_relist_replaces_the_references_once_it_is_done() {
        let references = References::default();
        references.saw(&Event::Apply(guard(&example("minimal.yaml"))));
        references.saw(&Event::Init);
        references.saw(&Event::InitApply(guard(&example("production.yaml"))));
        assert_eq!(upstream(&references), ["chat"], "the old answer meanwhile");
        references.saw(&Event::InitDone);
        assert_eq!(upstream(&references), ["chat-prod"]);
    }
}
