//! An org's model providers (bring your own key): set, list (never the key), clear, and resolve
//! for a request. The org always comes from the verified context, and a sealed key is bound to
//! its org (associated data), so one org's key can never serve another org's request.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::provider::OpenAiConfig;
use super::Chat;
use crate::config::Config;
use crate::control::{ControlPlane, ProviderRow};
use crate::crypto::{MasterKey, MasterKeySource};
use crate::error::{Error, Resource, Result};
use crate::identity::{Action, OrgAccess};

pub const OPENAI_COMPATIBLE: &str = "openai-compatible";

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderInput {
    pub base_url: String,
    pub model: String,
    /// The org's own key. Absent on an update: the stored key is kept.
    #[serde(default)]
    pub api_key: Option<String>,
}

/// A provider as listed: never its key, only whether one is set.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    pub name: String,
    pub base_url: String,
    pub model: String,
    pub api_key_set: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<ProviderRow> for ProviderView {
    fn from(p: ProviderRow) -> Self {
        ProviderView {
            name: p.name,
            base_url: p.base_url,
            model: p.model,
            api_key_set: p.sealed.is_some(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    if name == OPENAI_COMPATIBLE {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "unknown provider {name:?}: the configurable provider is \"openai-compatible\" (extractive needs no settings)"
        )))
    }
}

fn check_base_url(url: &str) -> Result<String> {
    let u = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(u)
        .map_err(|_| Error::invalid("base_url must be an absolute http(s) URL"))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || u.len() > 500
    {
        return Err(Error::invalid(
            "base_url must be an http(s) URL without credentials, query or fragment, e.g. https://api.openai.com/v1",
        ));
    }
    Ok(u.to_string())
}

fn org_context(org: Uuid) -> Vec<u8> {
    format!("enclave/org-provider/{org}").into_bytes()
}

/// The org providers' sealed keys and the master key that opens them: the one place a
/// provider key is sealed or opened. Shared by chat (its answers) and knowledge (embeddings,
/// as its `OrgProviders`).
pub struct ProviderKeys {
    control: Arc<ControlPlane>,
    master_key: MasterKey,
}

impl ProviderKeys {
    /// Loads the master key (`ENCLAVE_MASTER_KEY`, `--master-key-file`, or `data/master.key`,
    /// generated on first start).
    pub fn load(
        config: &Config,
        control: Arc<ControlPlane>,
    ) -> Result<(ProviderKeys, MasterKeySource)> {
        let (master_key, source) = MasterKey::load(
            config.master_key.as_deref(),
            config.master_key_file.as_deref(),
            &config.data_dir,
        )?;
        Ok((
            ProviderKeys {
                control,
                master_key,
            },
            source,
        ))
    }

    pub(super) fn control(&self) -> &ControlPlane {
        &self.control
    }

    fn seal(&self, org: Uuid, key: &str) -> Result<crate::crypto::Sealed> {
        self.master_key.seal(key.as_bytes(), &org_context(org))
    }

    /// The OpenAI-compatible provider of `org` with its key opened, if the org has one. `org`
    /// must be the verified org of the request.
    pub(crate) fn org_openai_provider(&self, org: Uuid) -> Result<Option<OpenAiConfig>> {
        self.open_org_provider(org, OPENAI_COMPATIBLE)
    }

    /// The provider `name` of `org` with its key opened (chat and embeddings), if the org has
    /// one. `org` must be the verified org of the request or the workspace's record.
    pub(crate) fn open_org_provider(&self, org: Uuid, name: &str) -> Result<Option<OpenAiConfig>> {
        let Some(row) = self.control().get_provider(org, name)? else {
            return Ok(None);
        };
        if row.org_id != org {
            return Err(Error::NotFound(Resource::Provider));
        }
        let api_key = match &row.sealed {
            Some(s) => {
                let plain = self.master_key.open(s, &org_context(org)).map_err(|e| {
                    tracing::error!(org_id = %org, error = %e, "provider key does not open");
                    Error::Provider(
                        "the organization's provider key cannot be read by this server (was the master key changed?); set it again"
                            .into(),
                    )
                })?;
                String::from_utf8(plain).map_err(|_| {
                    Error::Provider("the organization's provider key is corrupt".into())
                })?
            }
            None => String::new(),
        };
        Ok(Some(OpenAiConfig {
            base_url: row.base_url,
            model: row.model,
            api_key,
            temperature: None,
            max_tokens: None,
        }))
    }
}

impl crate::knowledge::OrgProviders for ProviderKeys {
    fn open_provider(
        &self,
        org: Uuid,
        name: &str,
    ) -> Result<Option<crate::knowledge::embedders::Endpoint>> {
        Ok(self
            .open_org_provider(org, name)?
            .map(|p| crate::knowledge::embedders::Endpoint {
                org,
                base_url: p.base_url,
                api_key: p.api_key,
            }))
    }
}

impl Chat {
    pub fn list_providers(&self, access: &OrgAccess) -> Result<Vec<ProviderView>> {
        access.require(Action::ProvidersManage)?;
        Ok(self
            .control()
            .list_providers(access.org().id)?
            .into_iter()
            .map(ProviderView::from)
            .collect())
    }

    /// Sets (creates or replaces) an org's provider. The API key is sealed before it is stored.
    pub fn set_provider(
        &self,
        access: &OrgAccess,
        name: &str,
        input: ProviderInput,
    ) -> Result<ProviderView> {
        access.require(Action::ProvidersManage)?;
        check_name(name)?;
        let base_url = check_base_url(&input.base_url)?;
        let model = input.model.trim();
        if model.is_empty() || model.len() > 200 || model.chars().any(char::is_control) {
            return Err(Error::invalid("model must be 1 to 200 characters"));
        }
        let sealed = match input.api_key.as_deref() {
            Some(k) => {
                let k = k.trim();
                if k.is_empty()
                    || k.len() > 4096
                    || k.chars().any(|c| c.is_control() || c.is_whitespace())
                {
                    return Err(Error::invalid(
                        "api_key must be 1 to 4096 characters without spaces",
                    ));
                }
                Some(self.keys.seal(access.org_id(), k)?)
            }
            None => None,
        };
        let row = self.control().put_provider(
            access.org().id,
            name,
            &base_url,
            model,
            sealed.as_ref(),
        )?;
        tracing::info!(org_id = %access.org().id, provider = name, "provider settings changed");
        Ok(row.into())
    }

    pub fn delete_provider(&self, access: &OrgAccess, name: &str) -> Result<()> {
        access.require(Action::ProvidersManage)?;
        check_name(name)?;
        self.control().delete_provider(access.org().id, name)?;
        tracing::info!(org_id = %access.org().id, provider = name, "provider settings cleared");
        Ok(())
    }
}
