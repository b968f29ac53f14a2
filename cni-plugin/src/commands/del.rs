//! DEL: idempotent teardown. It needs neither the netns (containerd sends
//! CNI_NETNS="" once the sandbox is gone) nor a known container.

use super::{Invocation, net_error, open_store, store_error};
use crate::agent_client;
use crate::error::CniError;
use crate::ipam::store::lock;
use crate::ipam::{Attachment, Store};
use crate::naming::host_veth_name;
use crate::net::wiring;

pub fn run(inv: &Invocation) -> Result<(), CniError> {
    let env = &inv.env;
    let owner = Attachment::new(&env.container_id, &env.ifname);
    // The link goes first: its address must not be handed out again while
    // the old veth still routes it.
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    wiring::delete_host_links(&[host_name]).map_err(net_error)?;
    let mut store = open_store(&inv.conf)?;
    lock(&mut store)
        .and_then(|mut locked| locked.release_by_id(&owner))
        .map_err(store_error)?;
    agent_client::for_socket(inv.conf.agent_socket.as_deref())
        .deregister(&env.container_id, &env.ifname)
}
