//! Problems found in objects while computing the plan.

use std::fmt;

use super::object::ObjectKey;

/// Something about one object the plan could not honour (an unparsable
/// address, a pod on an unknown node, ...). The object's other parts still
/// apply. Sorted and deduplicated in a plan, so callers can diff them
/// between syncs and log only new ones.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectWarning {
    pub object: ObjectKey,
    pub message: String,
}

impl ObjectWarning {
    pub fn new(object: ObjectKey, message: impl Into<String>) -> Self {
        Self {
            object,
            message: message.into(),
        }
    }
}

impl fmt::Display for ObjectWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}
