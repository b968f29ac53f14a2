//! STATUS (spec 1.1): code 50 when an ADD could not succeed now.

use crate::config::NetConf;
use crate::error::CniError;
use crate::ipam::DiskStore;
use crate::ipam::allocator::first_full_set;

pub fn run(conf: &NetConf) -> Result<(), CniError> {
    let store = DiskStore::open(&conf.ipam.data_dir, &conf.name)
        .map_err(|e| CniError::not_available(format!("IPAM data directory is unusable: {e}")))?;
    match first_full_set(&store, &conf.ipam.range_sets) {
        Ok(None) => Ok(()),
        Ok(Some(set)) => Err(CniError::not_available(format!(
            "no free IP address left in range set {set}"
        ))),
        Err(e) => Err(CniError::not_available(format!(
            "cannot read IPAM reservations: {e}"
        ))),
    }
}
