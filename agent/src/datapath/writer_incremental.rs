//! The writer's fast path: after a clean apply the maps hold exactly the
//! last plan, so a new plan only needs the frontends that changed, came or
//! went, and the backends they touch. Same stages and order as the full
//! diff; any failure sends the next apply back to the full diff.

use std::collections::{BTreeSet, HashSet};

use super::{ApplyOutcome, Run, Writer, io_exhausted};
use crate::{
    datapath::{
        diff::{self, MaglevFn},
        keys::{BackendKey, FrontendKey},
        state::LbStore,
    },
    plan::{DesiredState, Frontend},
};

impl Writer {
    pub(super) fn apply_changes(
        &mut self,
        store: &mut dyn LbStore,
        desired: &DesiredState,
        maglev: Option<MaglevFn<'_>>,
    ) -> ApplyOutcome {
        let mut run = Run::default();
        let mut present = HashSet::with_capacity(desired.frontends.len());
        let mut changed: Vec<&Frontend> = Vec::new();
        for f in &desired.frontends {
            let key = FrontendKey::of(f);
            present.insert(key);
            if self.applied.get(&key) != Some(f) {
                changed.push(f);
            }
        }
        let mut gone: Vec<FrontendKey> = self
            .applied
            .keys()
            .filter(|k| !present.contains(k))
            .copied()
            .collect();
        gone.sort();

        // Recount the backends of what changed or went.
        let mut touched: BTreeSet<BackendKey> = BTreeSet::new();
        for key in &gone {
            if let Some(old) = self.applied.get(key) {
                touched.extend(self.backend_refs.remove(old));
            }
        }
        for f in &changed {
            if let Some(old) = self.applied.get(&FrontendKey::of(f)) {
                touched.extend(self.backend_refs.remove(old));
            }
            touched.extend(self.backend_refs.add(f));
        }

        // Stage 1: touched backends that are still used, then rev-NAT.
        let wanted = touched
            .iter()
            .filter_map(|k| Some((*k, self.backend_refs.value(k)?)))
            .collect();
        let indices =
            self.write_backends_and_rev_nat(store, &wanted, changed.iter().copied(), &mut run);

        // Stage 2: the changed frontends.
        let mut removed = Vec::new();
        for (frontend, index) in changed.iter().zip(&indices) {
            let key = FrontendKey::of(frontend);
            let Some(index) = *index else {
                run.fail(
                    weir_common::maps::LB4_REVNAT,
                    &io_exhausted(),
                    &format!("{key:?}"),
                );
                run.stats.frontends_failed += 1;
                continue;
            };
            let ops = diff::frontend_ops(&self.state, frontend, index, &self.backend_ids, maglev);
            if self.execute_frontend(store, &ops, &mut run) {
                removed.extend(ops.removed);
            } else {
                run.stats.frontends_failed += 1;
            }
        }

        // Stage 3: frontends that went (heads first), then backends no
        // frontend uses any more.
        let (ops, gone_pairs) = diff::removed_frontend_ops(&self.state, &gone);
        removed.extend(gone_pairs);
        self.execute_all(store, &ops, &mut run);
        for key in &gone {
            self.rev_nat.retire(key);
        }
        let unused: Vec<BackendKey> = touched
            .iter()
            .filter(|k| self.backend_refs.value(k).is_none())
            .copied()
            .collect();
        // After a failed write, a frontend may still name a backend the plan
        // dropped (its old slots or Maglev table stayed): keep those.
        let referenced = if run.stats.failures.is_empty() && run.stats.frontends_failed == 0 {
            HashSet::new()
        } else {
            diff::referenced_backends(&self.state)
        };
        let ops: Vec<_> = unused
            .iter()
            .filter_map(|k| self.backend_ids.get(k))
            .filter(|id| self.state.backends.contains_key(id) && !referenced.contains(id))
            .map(|id| super::Op::DelBackend { id })
            .collect();
        self.execute_all(store, &ops, &mut run);
        for key in &unused {
            if let Some(id) = self.backend_ids.get(key)
                && !self.state.backends.contains_key(&id)
            {
                self.backend_ids.release(key, false);
            }
        }

        run.stats.frontends = desired.frontends.len() - run.stats.frontends_failed;
        run.stats.services = desired
            .frontends
            .iter()
            .map(|f| (f.service.namespace.as_str(), f.service.name.as_str()))
            .collect::<BTreeSet<_>>()
            .len();
        run.stats.backends = self.backend_refs.len();
        run.warn_failures();
        if run.stats.failures.is_empty() && run.stats.frontends_failed == 0 {
            for key in &gone {
                self.applied.remove(key);
            }
            for f in changed {
                self.applied.insert(FrontendKey::of(f), f.clone());
            }
        } else {
            // The maps may now differ from any plan we know: diff fully next
            // time.
            self.settle_dirty();
        }
        ApplyOutcome {
            stats: run.stats,
            removed,
        }
    }
}
