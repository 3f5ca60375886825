//! What the running kernel offers a sandbox.

/// The oldest Landlock ABI that `compute` needs without
/// [`best_effort`](crate::Sandbox::best_effort): ABI 3 (Linux 6.2) handles every
/// file-system right, truncation included.
pub(crate) const REQUIRED_LANDLOCK_ABI: i32 = 3;

/// What the running kernel offers a [`Sandbox`](crate::Sandbox): see
/// [`Sandbox::support`](crate::Sandbox::support).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxSupport {
    landlock_abi: Option<i32>,
}

impl SandboxSupport {
    pub(crate) fn new(landlock_abi: Option<i32>) -> Self {
        Self { landlock_abi }
    }

    /// The kernel's Landlock ABI version, `None` when Landlock is absent or
    /// disabled.
    #[must_use]
    pub fn landlock_abi(&self) -> Option<i32> {
        self.landlock_abi
    }

    /// Whether the whole `compute` policy can be enforced here.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.missing().is_none()
    }

    /// What is missing for the whole policy, in words.
    pub(crate) fn missing(&self) -> Option<String> {
        match self.landlock_abi {
            Some(abi) if abi >= REQUIRED_LANDLOCK_ABI => None,
            Some(abi) => Some(format!(
                "this kernel's Landlock is ABI {abi}; the sandbox needs ABI \
                 {REQUIRED_LANDLOCK_ABI} (Linux 6.2) to deny every file-system access"
            )),
            None => Some(
                "this kernel has no Landlock (Linux 5.13+, with landlock in the `lsm=` boot \
                 list); the sandbox needs it to deny file access"
                    .to_owned(),
            ),
        }
    }
}
