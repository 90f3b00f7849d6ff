//! The certificate step with `tls.mode: CertManager`: write the cert-manager `Certificate`, and
//! judge the certificate by cert-manager's `Ready` condition and by the Secret it filled, which
//! the operator only reads (as a user's Secret). Renewal is cert-manager's; the gateways reload
//! the Secret when it changes.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use crate::apply::delete_owned;
use crate::build::cert_manager::{
    CertManagerCondition, Certificate as CertManagerCertificate, certificate,
};
use crate::certificate::check_user_secret;
use crate::error::Error;
use crate::plan::{Plan, TlsPlan};
use crate::reconcile::{Context, apply_named, get};
use crate::status::Problem;

/// The fleet asks for cert-manager, whose CRDs the cluster does not serve.
pub const CERT_MANAGER_NOT_INSTALLED: &str = "CertManagerNotInstalled";
/// cert-manager has not (yet) issued the certificate.
pub const CERTIFICATE_NOT_READY: &str = "CertificateNotReady";

/// Applies the Certificate and returns the served certificate's state: `(reason, notAfter,
/// renewalTime)` once cert-manager says Ready and the Secret holds a valid pair.
pub async fn ensure_certificate(
    ctx: &Context,
    plan: &Plan,
    tls: &TlsPlan,
    owner: &OwnerReference,
    secret: Option<&Secret>,
    now: Timestamp,
) -> Result<Result<(&'static str, Timestamp, Option<Timestamp>), Problem>, Error> {
    let namespace = &plan.names.namespace;
    let Some(desired) = certificate(plan, tls, owner) else {
        return Err(Error::Certificate {
            secret: tls.secret_name.clone(),
            message: "tls.mode is CertManager without an issuerRef".to_owned(),
        });
    };
    let name = desired.name_any();
    let applied: CertManagerCertificate = match apply_named(ctx, namespace, desired).await {
        Ok(applied) => applied,
        Err(err) if err.is_not_found() => {
            return Ok(Err(Problem {
                reason: CERT_MANAGER_NOT_INSTALLED,
                message: format!(
                    "tls.mode CertManager needs cert-manager: the CustomResourceDefinition \
                     certificates.cert-manager.io is not installed, so Certificate \
                     {namespace}/{name} cannot be created"
                ),
            }));
        }
        Err(err) => return Err(err),
    };
    Ok(judge(namespace, &applied, tls, secret, now))
}

/// Deletes the fleet's Certificate when it no longer asks for cert-manager (another TLS mode,
/// or none), so that cert-manager stops writing the Secret. Where cert-manager is not
/// installed the read answers 404, which reads as absent.
pub async fn remove_unwanted(
    ctx: &Context,
    plan: &Plan,
    owner: &OwnerReference,
) -> Result<(), Error> {
    if plan
        .tls
        .as_ref()
        .is_some_and(|tls| tls.issuer_ref.is_some())
    {
        return Ok(());
    }
    let namespace = &plan.names.namespace;
    let certificates: kube::Api<CertManagerCertificate> = ctx.api(namespace);
    let observed = get(&certificates, namespace, &plan.names.gateway()).await?;
    delete_owned(&certificates, observed, &owner.uid).await
}

/// The certificate's state from what cert-manager reports and the Secret holds.
fn judge(
    namespace: &str,
    applied: &CertManagerCertificate,
    tls: &TlsPlan,
    secret: Option<&Secret>,
    now: Timestamp,
) -> Result<(&'static str, Timestamp, Option<Timestamp>), Problem> {
    let name = applied.name_any();
    match applied.ready() {
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
    let renewal_time = applied
        .status
        .as_ref()
        .and_then(|status| status.renewal_time.as_deref())
        .and_then(|time| time.parse::<Timestamp>().ok());
    Ok(("CertManagerReady", not_after, renewal_time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::cert_manager::CertManagerCertificateStatus;
    use crate::build::fixtures::{cert_manager_fleet, owner, plan_of};

    fn planned() -> (Plan, CertManagerCertificate) {
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
        let (plan, certificate) = planned();
        let tls = plan.tls.as_ref().unwrap();
        let now = Timestamp::now();
        let unreported = judge("team-a", &certificate, tls, None, now).unwrap_err();
        assert_eq!(unreported.reason, CERTIFICATE_NOT_READY);
        assert!(
            unreported.message.contains("not reported"),
            "{unreported:?}"
        );
        let issuing = with_ready(certificate, "False", "DoesNotExist");
        let problem = judge("team-a", &issuing, tls, None, now).unwrap_err();
        assert!(
            problem
                .message
                .contains("team-a/chat-gateway is not Ready: DoesNotExist"),
            "{problem:?}"
        );
    }

    #[test]
    fn a_ready_certificate_still_needs_its_secret() {
        let (plan, certificate) = planned();
        let ready = with_ready(certificate, "True", "Ready");
        let problem = judge(
            "team-a",
            &ready,
            plan.tls.as_ref().unwrap(),
            None,
            Timestamp::now(),
        )
        .unwrap_err();
        assert_eq!(problem.reason, "SecretNotFound");
    }
}
