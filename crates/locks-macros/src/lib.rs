//! `#[locked]`: run an `async fn` method while it holds a lock of the catalog,
//! the way Cinder's drivers write `@coordination.synchronized('{self.host}-{name}')`.
//!
//! Use it through its re-export, `locks::locked` (feature `macros`, on by
//! default). See [`locked`] for the syntax.

use proc_macro::TokenStream;

mod catalog;
mod expand;
mod template;

/// Wraps an `async fn` in a lock of the catalog: the lock is taken before
/// the body runs and released after it, whatever the body returns.
///
/// ```text
/// #[locks::locked(locks = <&Locks>, id = "<catalog id>"
///                 [, wait = <Wait>] [, guard = <ident>] [, template = "<name template>"]
///                 [, <parameter root> = <expr>]...)]
/// ```
///
/// - `locks`: an expression for the [`Locks`](../locks/struct.Locks.html)
///   client (`self.locks`; a `Locks`, `&Locks` or `Arc<Locks>`).
/// - `id`: the catalog id. Its name template is read at compile time from the
///   built-in catalog (`catalog/cinder.toml`); for an id of your own catalog,
///   give the template too with `template = "..."`.
/// - `wait` (default `Wait::Forever`): how long to wait, a `locks::Wait`.
/// - `guard = g`: binds `g: &LockGuard` in the body, for its name and its
///   fencing token.
/// - `root = expr`: where a parameter comes from when it is not an argument,
///   e.g. `management_address = self.config.address`, or `client = self.client`
///   for `{client.host}`.
///
/// Each template parameter is an expression, rendered with `ToString`:
/// `{self.host}` is the field `host` of `self`; `{volume.id}` the field `id`
/// of the argument `volume`; `{resource_id}` the argument `resource_id`;
/// `{connector[host]}` is `connector["host"]`; and `{f_name}` is the name of
/// the function, as in Cinder. A parameter whose first part is neither
/// `self`, an argument, nor a `root = expr` given in the attribute is a
/// compile error that names it.
///
/// The function must return `Result<T, E>` with `E: From<locks::Error>`:
/// failing to acquire returns before the body runs, and a failed release is
/// returned when the body succeeded (the body's own error wins otherwise).
/// A task calling a locked method while it already holds the same lock gets
/// `ErrorKind::WouldDeadlock` at once. The expansion refers to the facade as
/// `::locks`, so the calling crate depends on `locks` under that name.
///
/// ```
/// use locks::{Config, Locks};
///
/// #[derive(Debug)]
/// struct DriverError(String);
/// impl From<locks::Error> for DriverError {
///     fn from(e: locks::Error) -> Self {
///         DriverError(e.to_string())
///     }
/// }
///
/// struct UnityClient {
///     host: String,
///     locks: Locks,
/// }
///
/// impl UnityClient {
///     // Cinder: @coordination.synchronized('{self.host}-{name}')
///     #[locks::locked(locks = self.locks, id = "unity-create-host", guard = lock)]
///     async fn create_host(&self, name: &str) -> Result<String, DriverError> {
///         Ok(format!("created {name} under `{}`", lock.name()))
///     }
/// }
///
/// # let dir = tempfile::tempdir().unwrap();
/// # let toml = format!("[backends]\nnode = \"file://{0}\"\nglobal = \"file://{0}\"\n", dir.path().display());
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let config = Config::from_toml_str(&toml, dir.path(), "doctest")?;
/// // let config = Config::discover(None)?; // $LOCKS_CONFIG, or the embedded defaults
/// let client = UnityClient { host: "unity-a".into(), locks: Locks::open(config).await? };
/// let done = client.create_host("host-1").await.unwrap();
/// assert_eq!(done, "created host-1 under `unity-a-host-1`");
/// # Ok::<(), locks::Error>(())
/// # }).unwrap();
/// ```
///
/// A parameter that is not there does not compile; here `create_host` calls
/// its argument `host_name` but the template says `{name}`, and the error
/// reads: ``lock `unity-create-host` (template `{self.host}-{name}`) needs
/// parameter `name`, but `create_host` has no argument `name` (it has: self,
/// host_name)``.
///
/// ```compile_fail
/// # use locks::Locks;
/// # #[derive(Debug)] struct DriverError;
/// # impl From<locks::Error> for DriverError { fn from(_: locks::Error) -> Self { DriverError } }
/// struct UnityClient { host: String, locks: Locks }
/// impl UnityClient {
///     #[locks::locked(locks = self.locks, id = "unity-create-host")]
///     async fn create_host(&self, host_name: &str) -> Result<(), DriverError> {
///         Ok(())
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn locked(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::locked(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
