//! DEL: the attachment's port (its veth, forwards and connection-table entries) and its
//! lease go. Idempotent: repeated, with CNI_NETNS empty or gone, after a crashed ADD.
use super::{
    Env, ipam, our_port,
    spec::{CniError, Code, NetConf},
};
use crate::controller::ns;

/// DEL for `env`'s attachment to `conf`'s network.
pub async fn del(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    if env.container_id.is_empty() {
        return Err(CniError::new(Code::InvalidEnv, "CNI_CONTAINERID is not set"));
    }
    // The port first: the address must not be handed out while it is still in use. The
    // lease goes even if the port could not be removed (the runtime may never DEL again);
    // its record then keeps the address from being given to another port of the switch
    // until a later DEL or GC removes it.
    let removed = match our_port(env, conf).await {
        Ok(Some((p, _))) => ns::detach(&p.owner, Some(&p.switch)).await.map(drop).map_err(CniError::from),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    let released = ipam::exec(env, conf, "DEL", stdin).await;
    removed?;
    released?;
    Ok(())
}
