//! The serving certificate, decided in the build step for each `tls.mode`. Pure: the clock and
//! the source of keys are passed in, and what must be written is returned.
//!
//! - SelfSigned: the operator issues and renews the certificate in a Secret it owns. Several
//!   fleets may name the same `tls.secretName`; a Secret is never taken from another owner: an
//!   absent one is created (not applied), so of fleets racing for one name exactly one wins, and
//!   the others report `SecretOwnedByAnother` until the winner is deleted.
//! - Secret: the user's Secret is only ever read and checked.
//! - CertManager: the operator writes cert-manager's `Certificate` and judges the certificate by
//!   its `Ready` condition and by the Secret cert-manager filled, which it only reads. Renewal
//!   is cert-manager's; the gateways reload the Secret when it changes.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use crate::build::cert_manager::{
    CertManagerCondition, Certificate as CertManagerCertificate, certificate,
};
use crate::build::tls_secret::{
    CA_CERT_KEY, CA_KEY_KEY, CERT_KEY, ISSUE_REASON_ANNOTATION, KEY_KEY, TLS_SECRET_TYPE,
    tls_secret,
};
use crate::crd::TlsMode;
use crate::error::Error;
use crate::plan::{Plan, TlsPlan};
use crate::status::{Certificate, Problem};
use crate::x509::{self, Decision, IssueReason, KeySource, Stored, StoredCa};

/// The fleet asks for cert-manager, whose CRDs the cluster does not serve.
pub const CERT_MANAGER_NOT_INSTALLED: &str = "CertManagerNotInstalled";
/// cert-manager has not (yet) issued the certificate.
pub const CERTIFICATE_NOT_READY: &str = "CertificateNotReady";

/// `(reason, notAfter, renewalTime)` of a usable certificate.
type Usable = (&'static str, Timestamp, Option<Timestamp>);

/// The certificate's state, and what to write for it.
#[derive(Debug)]
pub struct Decided {
    pub certificate: Certificate,
    /// For SelfSigned, the time until the certificate is renewed.
    pub renew_in: Option<Duration>,
    pub write: Option<CertificateWrite>,
}

/// What the certificate needs written.
#[derive(Debug)]
pub enum CertificateWrite {
    /// A newly issued SelfSigned certificate; `create` when no Secret of that name exists.
    Issued {
        secret: Secret,
        create: bool,
        /// The Event's reason and note, published once the Secret is stored.
        event: (&'static str, String),
    },
    /// cert-manager's Certificate, applied on every reconcile like any child.
    CertManager(CertManagerCertificate),
}

/// Decides the serving certificate of `plan` from the Secret (and, with cert-manager, the
/// Certificate) that exist now.
pub fn decide(
    plan: &Plan,
    tls: &TlsPlan,
    owner: &OwnerReference,
    secret: Option<&Secret>,
    cert_manager: Option<&CertManagerCertificate>,
    now: Timestamp,
    keys: KeySource,
) -> Result<Decided, Error> {
    let namespace = &plan.names.namespace;
    let decided = |state, renew_in, write| Decided {
        certificate: Certificate {
            secret_name: tls.secret_name.clone(),
            state,
        },
        renew_in,
        write,
    };
    match tls.mode {
        TlsMode::Secret => Ok(decided(
            check_user_secret(namespace, tls, secret, now),
            None,
            None,
        )),
        TlsMode::CertManager => {
            let Some(desired) = certificate(plan, tls, owner) else {
                return Err(Error::Certificate {
                    secret: tls.secret_name.clone(),
                    message: "tls.mode is CertManager without an issuerRef".to_owned(),
                });
            };
            let state = judge(
                namespace,
                &desired.name_any(),
                cert_manager,
                tls,
                secret,
                now,
            );
            Ok(decided(
                state,
                None,
                Some(CertificateWrite::CertManager(desired)),
            ))
        }
        TlsMode::SelfSigned => self_signed(plan, tls, owner, secret, now, keys, decided),
    }
}

fn self_signed(
    plan: &Plan,
    tls: &TlsPlan,
    owner: &OwnerReference,
    existing: Option<&Secret>,
    now: Timestamp,
    keys: KeySource,
    decided: impl Fn(Result<Usable, Problem>, Option<Duration>, Option<CertificateWrite>) -> Decided,
) -> Result<Decided, Error> {
    if let Some(secret) = existing
        && let Err(problem) = ensure_ours(secret, owner)
    {
        return Ok(decided(Err(problem), None, None));
    }
    let stored = match existing {
        None => Stored::Missing,
        Some(secret) => match (
            secret_bytes(secret, CERT_KEY),
            secret_bytes(secret, KEY_KEY),
        ) {
            (Some(cert), Some(key)) => match x509::check_pair(cert, key) {
                Ok(info) => Stored::Valid(info),
                Err(message) => Stored::Damaged(message),
            },
            _ => Stored::Damaged("tls.crt or tls.key is missing".to_owned()),
        },
    };
    let renew_in =
        |renewal_time: Timestamp| Some((renewal_time - now).try_into().unwrap_or(Duration::ZERO));
    let reason = match x509::decide(&stored, &tls.dns_names, tls.renew_before, now) {
        Decision::Keep { renewal_time } => {
            let Stored::Valid(info) = &stored else {
                unreachable!("only a valid certificate is kept")
            };
            let reason = match existing.and_then(|s| s.annotations().get(ISSUE_REASON_ANNOTATION)) {
                Some(reason) if reason == "CertificateRenewed" => "CertificateRenewed",
                _ => "CertificateIssued",
            };
            let state = Ok((reason, info.not_after, Some(renewal_time)));
            return Ok(decided(state, renew_in(renewal_time), None));
        }
        Decision::Issue(reason) => reason,
    };
    let stored_ca = existing.and_then(|secret| {
        let cert_pem = std::str::from_utf8(secret_bytes(secret, CA_CERT_KEY)?).ok()?;
        let key_pem = std::str::from_utf8(secret_bytes(secret, CA_KEY_KEY)?).ok()?;
        Some(StoredCa { cert_pem, key_pem })
    });
    let issued = x509::issue(
        keys,
        &format!("{}/{}", plan.names.namespace, plan.names.instance),
        &tls.dns_names,
        tls.duration,
        now,
        stored_ca,
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
    let ca_note = if issued.new_ca {
        "a new CA"
    } else {
        "the existing CA"
    };
    let note = format!(
        "issued a certificate in Secret {} for {} valid until {} ({why}), signed by {ca_note}",
        tls.secret_name,
        tls.dns_names.join(", "),
        issued.not_after
    );
    let write = CertificateWrite::Issued {
        secret: tls_secret(plan, tls, &issued, event_reason, owner),
        create: existing.is_none(),
        event: (event_reason, note),
    };
    let renewal_time = x509::renewal_time(issued.not_after, tls.renew_before);
    let state = Ok((event_reason, issued.not_after, Some(renewal_time)));
    Ok(decided(state, renew_in(renewal_time), Some(write)))
}

/// Whether the SelfSigned `secret` belongs to the WebSocketService `owner`, which alone may
/// write it; otherwise the problem, naming the owner when it is another WebSocketService.
pub(crate) fn ensure_ours(secret: &Secret, owner: &OwnerReference) -> Result<(), Problem> {
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
) -> Result<Usable, Problem> {
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
    let info = x509::check_pair(cert, key).map_err(invalid)?;
    if info.not_after <= now {
        return Err(invalid(format!(
            "the certificate expired at {}",
            info.not_after
        )));
    }
    Ok(("SecretValid", info.not_after, None))
}

/// The certificate's state from what cert-manager reports on the Certificate `name` and what
/// the Secret holds.
fn judge(
    namespace: &str,
    name: &str,
    observed: Option<&CertManagerCertificate>,
    tls: &TlsPlan,
    secret: Option<&Secret>,
    now: Timestamp,
) -> Result<Usable, Problem> {
    match observed.and_then(CertManagerCertificate::ready) {
        Some(CertManagerCondition { status, .. }) if status == "True" => {}
        condition => {
            let said = condition
                .map(|c| {
                    format!(
                        ": {} ({})",
                        c.reason.as_deref().unwrap_or("no reason"),
                        c.message.as_deref().unwrap_or("no message")
                    )
                })
                .unwrap_or_else(|| ": cert-manager has not reported on it yet".to_owned());
            return Err(Problem {
                reason: CERTIFICATE_NOT_READY,
                message: format!("cert-manager Certificate {namespace}/{name} is not Ready{said}"),
            });
        }
    }
    let (_, not_after, _) = check_user_secret(namespace, tls, secret, now)?;
    let renewal_time = observed
        .and_then(|certificate| certificate.status.as_ref())
        .and_then(|status| status.renewal_time.as_deref())
        .and_then(|time| time.parse::<Timestamp>().ok());
    Ok(("CertManagerReady", not_after, renewal_time))
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

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::build::cert_manager::CertManagerCertificateStatus;
    use crate::build::fixtures::{cert_manager_fleet, example, owner, plan_of};
    use crate::x509::generate_key;

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
        let issued = x509::issue(
            generate_key,
            "x",
            &["chat".into()],
            Duration::from_secs(86400),
            now,
            None,
        )
        .unwrap();
        let other = x509::issue(
            generate_key,
            "y",
            &["chat".into()],
            Duration::from_secs(86400),
            now,
            None,
        )
        .unwrap();
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

    /// One fixed key, so that a test can tell which key an issued certificate carries.
    fn fixed_key() -> Result<rcgen::KeyPair, String> {
        static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let pem = PEM.get_or_init(|| generate_key().unwrap().serialize_pem());
        rcgen::KeyPair::from_pem(pem).map_err(|err| err.to_string())
    }

    #[test]
    fn an_absent_self_signed_secret_is_issued_for_creation_with_keys_from_the_source() {
        let wss = example("production.yaml");
        let plan = plan_of(&wss);
        let tls = plan.tls.as_ref().unwrap();
        let now = Timestamp::now();
        let decided = decide(&plan, tls, &owner(&wss), None, None, now, fixed_key).unwrap();
        let Some(CertificateWrite::Issued {
            secret,
            create,
            event,
        }) = decided.write
        else {
            panic!("nothing to write: {:?}", decided.write);
        };
        assert!(create, "an absent Secret is created, never applied");
        assert_eq!(event.0, "CertificateIssued");
        assert!(event.1.contains("first issuance"), "{}", event.1);
        let key = &secret.data.as_ref().unwrap()[KEY_KEY].0;
        assert_eq!(
            String::from_utf8_lossy(key),
            fixed_key().unwrap().serialize_pem()
        );
        let (reason, _, renewal) = decided.certificate.state.unwrap();
        assert_eq!(reason, "CertificateIssued");
        let renew_in = decided.renew_in.unwrap();
        let until_renewal = renewal.unwrap().as_second() - now.as_second();
        assert!(
            (until_renewal - renew_in.as_secs() as i64).abs() <= 1,
            "{until_renewal} {renew_in:?}"
        );

        // The stored Secret is kept, and renewal is awaited, not repeated.
        let stored = Secret {
            metadata: ObjectMeta {
                owner_references: Some(vec![owner(&wss)]),
                ..secret.metadata.clone()
            },
            ..secret
        };
        let kept = decide(
            &plan,
            tls,
            &owner(&wss),
            Some(&stored),
            None,
            now,
            fixed_key,
        )
        .unwrap();
        assert!(kept.write.is_none(), "{:?}", kept.write);
        assert_eq!(kept.renew_in, Some(renew_in));
    }

    fn cert_manager_certificate() -> (Plan, CertManagerCertificate) {
        let wss = cert_manager_fleet();
        let plan = plan_of(&wss);
        let certificate = certificate(&plan, plan.tls.as_ref().unwrap(), &owner(&wss)).unwrap();
        (plan, certificate)
    }

    fn with_ready(
        mut certificate: CertManagerCertificate,
        status: &str,
        reason: &str,
    ) -> CertManagerCertificate {
        certificate.status = Some(CertManagerCertificateStatus {
            conditions: vec![CertManagerCondition {
                type_: "Ready".to_owned(),
                status: status.to_owned(),
                reason: Some(reason.to_owned()),
                message: Some("Issuing certificate as Secret does not exist".to_owned()),
            }],
            not_after: None,
            renewal_time: Some("2027-01-01T00:00:00Z".to_owned()),
        });
        certificate
    }

    #[test]
    fn a_certificate_cert_manager_has_not_issued_names_its_reason() {
        let (plan, certificate) = cert_manager_certificate();
        let tls = plan.tls.as_ref().unwrap();
        let name = certificate.name_any();
        let now = Timestamp::now();
        let unreported = judge("team-a", &name, None, tls, None, now).unwrap_err();
        assert_eq!(unreported.reason, CERTIFICATE_NOT_READY);
        assert!(
            unreported.message.contains("not reported"),
            "{unreported:?}"
        );
        let issuing = with_ready(certificate, "False", "DoesNotExist");
        let problem = judge("team-a", &name, Some(&issuing), tls, None, now).unwrap_err();
        assert!(
            problem
                .message
                .contains("team-a/chat-gateway is not Ready: DoesNotExist"),
            "{problem:?}"
        );
    }

    #[test]
    fn a_ready_certificate_still_needs_its_secret() {
        let (plan, certificate) = cert_manager_certificate();
        let name = certificate.name_any();
        let ready = with_ready(certificate, "True", "Ready");
        let tls = plan.tls.as_ref().unwrap();
        let problem = judge("team-a", &name, Some(&ready), tls, None, Timestamp::now());
        assert_eq!(problem.unwrap_err().reason, "SecretNotFound");
    }
}
