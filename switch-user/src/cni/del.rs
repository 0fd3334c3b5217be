//! DEL: the container's port (its veth, forwards and connection-table entries) and its
//! lease go. Idempotent: repeated, with CNI_NETNS empty or gone, after a crashed ADD.
use super::{
    Env, ipam,
    spec::{CniError, Code, NetConf},
};
use crate::controller::ns;

/// DEL for `env`'s container.
pub async fn del(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    if env.container_id.is_empty() {
        return Err(CniError::new(Code::InvalidEnv, "CNI_CONTAINERID is not set"));
    }
    // The port first: the address must not be handed out while it is still in use.
    ns::detach(&env.container_id, Some(conf.switch_name())).await?;
    ipam::exec(env, conf, "DEL", stdin).await?;
    Ok(())
}
