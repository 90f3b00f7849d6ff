//! The certificate step of a reconcile: issue and renew a SelfSigned certificate, or check the
//! user's Secret (which is only ever read).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::events::EventType;

use crate::apply::apply;
use crate::build::tls_secret::{
    CA_CERT_KEY, CA_KEY_KEY, CERT_KEY, ISSUE_REASON_ANNOTATION, KEY_KEY, TLS_SECRET_TYPE,
    tls_secret,
};
use crate::certs::{self, Decision, IssueReason, Stored, StoredCa};
use crate::crd::{TlsMode, WebSocketService};
use crate::error::Error;
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
    if tls.mode == TlsMode::Secret {
        return Ok((
            certificate(check_user_secret(namespace, tls, existing.as_ref(), now)),
            None,
        ));
    }
    if let Some(secret) = &existing
        && !secret.owner_references().iter().any(|o| o.uid == owner.uid)
    {
        let problem = Problem {
            reason: "SecretInvalid",
            message: format!(
                "Secret {namespace}/{} exists and is not managed by this WebSocketService; \
                     choose another tls.secretName or delete it",
                tls.secret_name
            ),
        };
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
    apply(&secrets, secret, existing).await?;
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

/// Checks a user-provided Secret without ever writing it.
fn check_user_secret(
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

    use k8s_openapi::ByteString;

    use super::*;
    use crate::build::fixtures::{example, plan_of};

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
