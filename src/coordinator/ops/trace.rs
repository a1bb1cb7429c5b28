//! The custody trail of one item (auditor).

use super::request::Decoded;
use super::{Caller, Ops, OpsError};
use crate::access::Operation;
use crate::serial::ItemKey;
use crate::trail::Trail;

impl Ops {
    /// The trail of `key`: every stored row that lists it with its evidence,
    /// its alerts and custody (auditor). A key no state ever listed gives an
    /// empty trail.
    pub fn trace_item(&self, caller: &Caller, key: Decoded<ItemKey>) -> Result<Trail, OpsError> {
        self.permit(caller, Operation::TraceItem)?;
        let key = key?;
        Ok(self.tracer.trace(&key)?)
    }
}
