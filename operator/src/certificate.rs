//! The certificate step of a reconcile: issue and renew a SelfSigned certificate, check the
//! user's Secret (which is only ever read), or hand over to cert-manager (`cert_manager`).
//!
//! Several fleets may name the same SelfSigned `tls.secretName`. A Secret is never taken from
//! another owner: an absent one is created (not applied), so of fleets racing for one name
//! exactly one wins, and the others report `SecretOwnedByAnother` until the winner is deleted.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;

use crate::apply::apply;
use crate::build::tls_secret::{
    CA_CERT_KEY, CA_KEY_KEY, CERT_KEY, ISSUE_REASON_ANNOTATION, KEY_KEY, TLS_SECRET_TYPE,
    tls_secret,
};
use crate::certs::{self, Decision, IssueReason, Stored, StoredCa};
use crate::crd::{TlsMode, WebSocketService};
use crate::error::Error;
use crate::names::FIELD_MANAGER;
use crate::plan::{Plan, TlsPlan};
use crate::reconcile::{Context, get};
use crate::status::{Certificate, Problem};

/// Provides the serving certificate; returns its state and, for SelfSigned, the time until renewal.
pub async fn ensure_certificate(
    wss: &WebSocketService,
    ctx: &Context,
    plan: &Plan,
    tls: &TlsPlan,
    owner: &OwnerReference,
    now: Timestamp,
) -> Result<(Certificate, Option<Duration>), Error> {
    let namespace = &plan.names.namespace;
    let secrets: Api<Secret> = ctx.api(namespace);
    let existing = get(&secrets, namespace, &tls.secret_name).await?;
    let certificate = |state| Certificate {
        secret_name: tls.secret_name.clone(),
        state,
    };
    match tls.mode {
        TlsMode::Secret => {
            return Ok((
                certificate(check_user_secret(namespace, tls, existing.as_ref(), now)),
                None,
            ));
        }
        TlsMode::CertManager => {
            let state = crate::cert_manager::ensure_certificate(
                ctx,
                plan,
                tls,
                owner,
                existing.as_ref(),
                now,
            )
            .await?;
            return Ok((certificate(state), None));
        }
        TlsMode::SelfSigned => {}
    }
    if let Some(secret) = &existing
        && let Err(problem) = ensure_ours(secret, owner)
    {
        return Ok((certificate(Err(problem)), None));
    }
    let stored = match &existing {
        None => Stored::Missing,
        Some(secret) => match (
            secret_bytes(secret, CERT_KEY),
            secret_bytes(secret, KEY_KEY),
        ) {
            (Some(cert), Some(key)) => match certs::check_pair(cert, key) {
                Ok(info) => Stored::Valid(info),
                Err(message) => Stored::Damaged(message),
            },
            _ => Stored::Damaged("tls.crt or tls.key is missing".to_owned()),
        },
    };
    let reason = match certs::decide(&stored, &tls.dns_names, tls.renew_before, now) {
        Decision::Keep { renewal_time } => {
            let Stored::Valid(info) = &stored else {
                unreachable!("only a valid certificate is kept")
            };
            let reason = match existing
                .as_ref()
                .and_then(|secret| secret.annotations().get(ISSUE_REASON_ANNOTATION))
            {
                Some(reason) if reason == "CertificateRenewed" => "CertificateRenewed",
                _ => "CertificateIssued",
            };
            let renew_in = (renewal_time - now).try_into().unwrap_or(Duration::ZERO);
            return Ok((
                certificate(Ok((reason, info.not_after, Some(renewal_time)))),
                Some(renew_in),
            ));
        }
        Decision::Issue(reason) => reason,
    };
    let stored_ca = existing.as_ref().and_then(|secret| {
        let cert_pem = std::str::from_utf8(secret_bytes(secret, CA_CERT_KEY)?).ok()?;
        let key_pem = std::str::from_utf8(secret_bytes(secret, CA_KEY_KEY)?).ok()?;
        Some((cert_pem, key_pem))
    });
    let issued = certs::issue(
        &format!("{namespace}/{}", plan.names.instance),
        &tls.dns_names,
        tls.duration,
        now,
        stored_ca.map(|(cert_pem, key_pem)| StoredCa { cert_pem, key_pem }),
    )
    .map_err(|message| Error::Certificate {
        secret: tls.secret_name.clone(),
        message,
    })?;
    let (event_reason, why) = match reason {
        IssueReason::Missing => ("CertificateIssued", "first issuance"),
        IssueReason::Damaged => ("CertificateRenewed", "the stored certificate was unusable"),
        IssueReason::NamesChanged => ("CertificateRenewed", "the DNS names changed"),
        IssueReason::Expiring => ("CertificateRenewed", "renewBefore was reached"),
    };
    let secret = tls_secret(plan, tls, &issued, event_reason, owner);
    if existing.is_some() {
        apply(&secrets, secret, existing).await?;
    } else if let Err(problem) = create_secret(&secrets, &secret, owner).await? {
        return Ok((certificate(Err(problem)), None));
    }
    let ca_note = if issued.new_ca {
        "a new CA"
    } else {
        "the existing CA"
    };
    ctx.publish(
        wss,
        EventType::Normal,
        event_reason,
        format!(
            "issued a certificate in Secret {} for {} valid until {} ({why}), signed by {ca_note}",
            tls.secret_name,
            tls.dns_names.join(", "),
            issued.not_after
        ),
    )
    .await;
    let renewal_time = certs::renewal_time(issued.not_after, tls.renew_before);
    let renew_in = (renewal_time - now).try_into().unwrap_or(Duration::ZERO);
    Ok((
        certificate(Ok((event_reason, issued.not_after, Some(renewal_time)))),
        Some(renew_in),
    ))
}

/// Creates the SelfSigned Secret. A create fails when the Secret exists, unlike an apply, which
/// every fleet sends with the same field manager and so would silently overwrite another's.
/// Losing that race to another writer is reported as the problem naming the winner.
async fn create_secret(
    secrets: &Api<Secret>,
    secret: &Secret,
    owner: &OwnerReference,
) -> Result<Result<(), Problem>, Error> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match secrets.create(&params, secret).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            match get(secrets, &namespace, &name).await? {
                Some(winner) => Ok(ensure_ours(&winner, owner)),
                // Gone again already: a failure, so that the retry creates it.
                None => Err(Error::kube("create", "Secret", &namespace, &name)(
                    kube::Error::Api(status),
                )),
            }
        }
        Err(err) => Err(Error::kube("create", "Secret", &namespace, &name)(err)),
    }
}

/// Whether the SelfSigned `secret` belongs to the WebSocketService `owner`, which alone may
/// write it; otherwise the problem, naming the owner when it is another WebSocketService.
fn ensure_ours(secret: &Secret, owner: &OwnerReference) -> Result<(), Problem> {
    let references = secret.owner_references();
    if references
        .iter()
        .any(|reference| reference.uid == owner.uid)
    {
        return Ok(());
    }
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let other_fleet = references.iter().find(|reference| {
        reference.controller == Some(true)
            && reference.kind == owner.kind
            && reference.api_version == owner.api_version
    });
    Err(match other_fleet {
        Some(other) => Problem {
            reason: "SecretOwnedByAnother",
            message: format!(
                "Secret {namespace}/{name} belongs to WebSocketService {namespace}/{}; \
                 choose another tls.secretName (it is issued again once that fleet is deleted)",
                other.name
            ),
        },
        None => Problem {
            reason: "SecretInvalid",
            message: format!(
                "Secret {namespace}/{name} exists and is not managed by this WebSocketService; \
                 choose another tls.secretName or delete it"
            ),
        },
    })
}

/// Checks a Secret the operator does not write (the user's, or cert-manager's) without ever
/// writing it.
pub(crate) fn check_user_secret(
    namespace: &str,
    tls: &TlsPlan,
    secret: Option<&Secret>,
    now: Timestamp,
) -> Result<(&'static str, Timestamp, Option<Timestamp>), Problem> {
    let name = &tls.secret_name;
    let invalid = |message: String| Problem {
        reason: "SecretInvalid",
        message: format!("TLS Secret {namespace}/{name}: {message}"),
    };
    let secret = secret.ok_or_else(|| Problem {
        reason: "SecretNotFound",
        message: format!("TLS Secret {namespace}/{name} does not exist"),
    })?;
    let type_ = secret.type_.as_deref().unwrap_or("Opaque");
    if type_ != TLS_SECRET_TYPE {
        return Err(invalid(format!("has type {type_}, want {TLS_SECRET_TYPE}")));
    }
    let (Some(cert), Some(key)) = (
        secret_bytes(secret, CERT_KEY),
        secret_bytes(secret, KEY_KEY),
    ) else {
        return Err(invalid("needs both tls.crt and tls.key".to_owned()));
    };
    let info = certs::check_pair(cert, key).map_err(invalid)?;
    if info.not_after <= now {
        return Err(invalid(format!(
            "the certificate expired at {}",
            info.not_after
        )));
    }
    Ok(("SecretValid", info.not_after, None))
}

fn secret_bytes<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|bytes| bytes.0.as_slice())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::Client;
    use serde_json::json;

    use super::*;
    use crate::build::fixtures::{example, owner, plan_of};
    use crate::reconcile::fixtures::context;

    const SECRETS: &str = "/api/v1/namespaces/team-a/secrets";

    /// The Secret `team-a/chat-prod-tls` with these owner references.
    fn issued_secret(owners: Vec<OwnerReference>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("chat-prod-tls".to_owned()),
                namespace: Some("team-a".to_owned()),
                owner_references: Some(owners),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    /// The fleet `chat-canary`, which names the same Secret as `production.yaml`.
    fn canary_owner() -> OwnerReference {
        OwnerReference {
            name: "chat-canary".to_owned(),
            uid: "uid-2".to_owned(),
            ..owner(&example("production.yaml"))
        }
    }

    fn failure(code: u16, reason: &str) -> (u16, Vec<u8>) {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": reason, "code": code, "message": reason});
        (code, status.to_string().into_bytes())
    }

    /// An apiserver on which `team-a/chat-prod-tls` is absent when first read. `rival`, when
    /// given, created it just before this operator's create, and is what later reads find.
    /// Writes succeed as a real apiserver's would; every request is recorded as `METHOD path`.
    fn racing_apiserver(rival: Option<Secret>) -> (Client, Arc<Mutex<Vec<String>>>) {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let apiserver = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let (log, rival) = (log.clone(), rival.clone());
            async move {
                let method = request.method().to_string();
                let path = request.uri().path().to_owned();
                let reads = {
                    let mut log = log.lock().unwrap();
                    log.push(format!("{method} {path}"));
                    log.iter().filter(|call| call.starts_with("GET ")).count()
                };
                let body = request.into_body().collect_bytes().await?.to_vec();
                let (code, body) = match (method.as_str(), path.strip_prefix(SECRETS)) {
                    ("GET", Some(_)) => match rival.filter(|_| reads > 1) {
                        Some(rival) => (200, serde_json::to_vec(&rival).unwrap()),
                        None => failure(404, "NotFound"),
                    },
                    ("POST", Some("")) if rival.is_some() => failure(409, "AlreadyExists"),
                    ("POST", Some("")) => (201, body),
                    ("PATCH", Some(_)) => (200, body),
                    _ => failure(500, "InternalError"),
                };
                let response = http::Response::builder()
                    .status(code)
                    .body(kube::client::Body::from(body))
                    .unwrap();
                Ok::<_, kube::Error>(response)
            }
        });
        (Client::new(apiserver, "team-a"), requests)
    }

    /// Runs the certificate step of `production.yaml` against `client`; returns its outcome and
    /// the writes it sent to Secrets.
    async fn ensure_production_certificate(
        client: Client,
        requests: &Mutex<Vec<String>>,
    ) -> (Certificate, Vec<String>) {
        let wss = example("production.yaml");
        let plan = plan_of(&wss);
        let tls = plan.tls.as_ref().unwrap();
        let ctx = context(client);
        let (certificate, _) =
            ensure_certificate(&wss, &ctx, &plan, tls, &owner(&wss), Timestamp::now())
                .await
                .expect("the certificate step completes");
        let writes = requests
            .lock()
            .unwrap()
            .iter()
            .filter(|call| !call.starts_with("GET ") && call.contains(SECRETS))
            .cloned()
            .collect();
        (certificate, writes)
    }

    #[tokio::test]
    async fn an_absent_secret_is_created_not_applied() {
        let (client, requests) = racing_apiserver(None);
        let (certificate, writes) = ensure_production_certificate(client, &requests).await;
        let (reason, _, _) = certificate.state.expect("a certificate was issued");
        assert_eq!(reason, "CertificateIssued");
        assert_eq!(writes, [format!("POST {SECRETS}")]);
    }

    #[tokio::test]
    async fn a_secret_another_fleet_created_first_is_left_to_it() {
        let (client, requests) = racing_apiserver(Some(issued_secret(vec![canary_owner()])));
        let (certificate, writes) = ensure_production_certificate(client, &requests).await;
        let problem = certificate.state.expect_err("the race was lost");
        assert_eq!(problem.reason, "SecretOwnedByAnother");
        assert!(
            problem
                .message
                .contains("WebSocketService team-a/chat-canary"),
            "{}",
            problem.message
        );
        assert_eq!(writes, [format!("POST {SECRETS}")], "nothing overwritten");
    }

    #[test]
    fn only_the_owning_fleet_may_write_an_issued_secret() {
        let ours = owner(&example("production.yaml"));
        assert_eq!(
            ensure_ours(&issued_secret(vec![ours.clone()]), &ours),
            Ok(())
        );

        let problem = ensure_ours(&issued_secret(vec![canary_owner()]), &ours).unwrap_err();
        assert_eq!(problem.reason, "SecretOwnedByAnother");
        assert!(
            problem.message.contains("team-a/chat-prod-tls")
                && problem
                    .message
                    .contains("WebSocketService team-a/chat-canary"),
            "{}",
            problem.message
        );

        let unowned = ensure_ours(&issued_secret(Vec::new()), &ours).unwrap_err();
        assert_eq!(unowned.reason, "SecretInvalid");
        assert!(
            unowned
                .message
                .contains("not managed by this WebSocketService")
        );
    }

    fn user_secret(type_: &str, data: &[(&str, &[u8])]) -> Secret {
        Secret {
            type_: Some(type_.to_owned()),
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn user_secrets_are_checked_for_presence_type_keys_and_pairing() {
        let plan = plan_of(&example("user-tls.yaml"));
        let tls = plan.tls.as_ref().unwrap();
        let now = Timestamp::now();
        let reason = |secret: Option<&Secret>| match check_user_secret("team-a", tls, secret, now) {
            Ok((reason, _, _)) => reason,
            Err(problem) => problem.reason,
        };
        assert_eq!(reason(None), "SecretNotFound");
        let issued =
            certs::issue("x", &["chat".into()], Duration::from_secs(86400), now, None).unwrap();
        let other =
            certs::issue("y", &["chat".into()], Duration::from_secs(86400), now, None).unwrap();
        let good = user_secret(
            "kubernetes.io/tls",
            &[
                ("tls.crt", issued.cert_pem.as_bytes()),
                ("tls.key", issued.key_pem.as_bytes()),
            ],
        );
        assert_eq!(reason(Some(&good)), "SecretValid");
        let opaque = user_secret(
            "Opaque",
            &[
                ("tls.crt", issued.cert_pem.as_bytes()),
                ("tls.key", issued.key_pem.as_bytes()),
            ],
        );
        assert_eq!(reason(Some(&opaque)), "SecretInvalid");
        let no_key = user_secret(
            "kubernetes.io/tls",
            &[("tls.crt", issued.cert_pem.as_bytes())],
        );
        assert_eq!(reason(Some(&no_key)), "SecretInvalid");
        let mismatched = user_secret(
            "kubernetes.io/tls",
            &[
                ("tls.crt", issued.cert_pem.as_bytes()),
                ("tls.key", other.key_pem.as_bytes()),
            ],
        );
        let problem = check_user_secret("team-a", tls, Some(&mismatched), now).unwrap_err();
        assert_eq!(problem.reason, "SecretInvalid");
        assert!(
            problem.message.contains("team-a/chat-user-tls")
                && problem.message.contains("does not match"),
            "{}",
            problem.message
        );
        let later = now + jiff::SignedDuration::from_hours(48);
        assert_eq!(
            check_user_secret("team-a", tls, Some(&good), later)
                .unwrap_err()
                .reason,
            "SecretInvalid"
        );
    }
}
