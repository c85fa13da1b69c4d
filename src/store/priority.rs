//! Priority classes of store requests, and the class of the running task.
//!
//! Four classes, highest first: [`Priority::OnDemand`] (a reader is waiting),
//! [`Priority::Profile`] (a boot profile: what a boot reads next),
//! [`Priority::ReadAhead`] (a sequential reader's window) and
//! [`Priority::Background`] (whole-image prefetch). The per-store request slots
//! ([`Limit`](super::limit::Limit)) serve waiters highest class first and keep
//! some slots for on-demand requests alone.
//!
//! The class travels with the work, not through the [`Store`](super::Store)
//! trait: [`scope`] runs a future with a [`Class`] in a tokio task-local, and
//! every store request made inside it (by this task; spawned tasks do not
//! inherit it) reads [`current`]. Outside any scope a request is on-demand:
//! someone waits for every request nobody classed (a manifest for an open, a
//! tag, a push, `vmifs get`), and such requests are few and small.
//!
//! A [`Class`] is shared and can be raised while its work runs: when an
//! on-demand reader joins a chunk download started by read-ahead, the
//! download's class is raised, and its requests still waiting for a slot are
//! re-ranked at once (they watch their class).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// A request's priority class; the derived order is the service order
/// (greater is served first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Whole-image prefetch.
    Background,
    /// Read-ahead of a sequential reader.
    ReadAhead,
    /// Boot-profile prefetch: chunks a boot is known to need next.
    Profile,
    /// A read someone is waiting for.
    OnDemand,
}

impl Priority {
    /// All classes, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Background,
        Priority::ReadAhead,
        Priority::Profile,
        Priority::OnDemand,
    ];
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Priority::Background => "background",
            Priority::ReadAhead => "read-ahead",
            Priority::Profile => "profile",
            Priority::OnDemand => "on-demand",
        })
    }
}

/// The class of one piece of work (a chunk download, say), shared by the
/// requests it makes; it can only go up. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Class(Arc<watch::Sender<Priority>>);

impl Class {
    pub fn new(p: Priority) -> Self {
        Class(Arc::new(watch::Sender::new(p)))
    }

    pub fn get(&self) -> Priority {
        *self.0.borrow()
    }

    /// Raise to `p` if that is higher; true if the class changed. Requests of
    /// this class waiting for a slot are re-ranked.
    pub fn raise(&self, p: Priority) -> bool {
        self.0.send_if_modified(|cur| {
            let up = p > *cur;
            if up {
                *cur = p;
            }
            up
        })
    }

    /// Resolves on each later change of the class.
    pub(crate) fn watch(&self) -> watch::Receiver<Priority> {
        self.0.subscribe()
    }
}

tokio::task_local! {
    static CLASS: Class;
}

/// Run `fut` with `class` as the class of the store requests it makes.
pub async fn scope<F: Future>(class: Class, fut: F) -> F::Output {
    CLASS.scope(class, fut).await
}

/// The class of the running task's requests: the innermost [`scope`], else a
/// fresh on-demand class.
pub fn current() -> Class {
    CLASS
        .try_with(Class::clone)
        .unwrap_or_else(|_| Class::new(Priority::OnDemand))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_service_order() {
        let mut v = Priority::ALL.to_vec();
        v.reverse();
        v.sort();
        assert_eq!(v, Priority::ALL);
        assert!(Priority::OnDemand > Priority::Profile);
        assert!(Priority::Profile > Priority::ReadAhead);
        assert!(Priority::ReadAhead > Priority::Background);
    }

    #[test]
    fn a_class_only_goes_up() {
        let c = Class::new(Priority::ReadAhead);
        assert!(!c.raise(Priority::Background));
        assert!(!c.raise(Priority::ReadAhead));
        assert_eq!(c.get(), Priority::ReadAhead);
        assert!(c.raise(Priority::OnDemand));
        assert_eq!(c.get(), Priority::OnDemand);
        assert!(!c.raise(Priority::Profile));
    }

    #[tokio::test]
    async fn scope_sets_the_class_of_the_task() {
        assert_eq!(current().get(), Priority::OnDemand);
        let c = Class::new(Priority::Background);
        let seen = scope(c.clone(), async {
            let inner = scope(Class::new(Priority::Profile), async { current().get() }).await;
            (current().get(), inner)
        })
        .await;
        assert_eq!(seen, (Priority::Background, Priority::Profile));
        // The scope shares the class: a raise is seen inside.
        let raised = scope(c.clone(), async {
            c.raise(Priority::OnDemand);
            current().get()
        })
        .await;
        assert_eq!(raised, Priority::OnDemand);
        assert_eq!(current().get(), Priority::OnDemand);
    }
}
