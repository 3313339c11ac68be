// Package locks takes the named locks of the locks catalog from Go: Process,
// Node and Global locks whose names come from one catalog shared with Rust
// and C, on the backends a TOML configuration chooses (memory, lock files,
// etcd, ZooKeeper). It wraps the C ABI of crates/locks-ffi (include/locks.h)
// through cgo.
//
//	client, err := locks.Open("/etc/cinder/locks.toml")
//	if err != nil { ... }
//	defer client.Close()
//	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
//	defer cancel()
//	guard, err := client.Lock(ctx, "infinidat", map[string]string{"management_address": "10.0.0.1"})
//	if err != nil { ... }              // errors.Is(err, locks.ErrTimeout), errors.Is(err, context.DeadlineExceeded)
//	defer guard.Release()
//
// # Building
//
// The package links the C library through pkg-config (`#cgo pkg-config:
// locks` in link_shared.go), which the Go tool cannot build: install it once
// from a checkout of the repository, then build as usual.
//
//	bash ci/install-c.sh /usr/local        # or any PREFIX; liblocks.so, liblocks.a, locks.pc
//	go build ./...                          # PKG_CONFIG_PATH=PREFIX/lib/pkgconfig for another PREFIX
//
// Outside the linker's default paths, run with LD_LIBRARY_PATH=PREFIX/lib or
// build with CGO_LDFLAGS=-Wl,-rpath,PREFIX/lib. To link the library
// statically, build with `-tags locks_static` (pkg-config package
// locks-static, link_static.go). The package carries its own copy of the
// header (locks.h, checked equal to include/locks.h), so `go mod vendor` works.
//
// # Waiting
//
// Each acquire blocks an OS thread inside one C call (Go starts more threads
// as needed) and keeps its place in the lock's queue under any context:
// waiters are served in the order they asked wherever the backend is first
// come, first served (memory; lock files among the callers of one process;
// etcd's default layout; ZooKeeper). A deadline becomes the C call's
// timeout. A context that can be cancelled is given a C cancellation handle
// (locks_cancel), which a goroutine triggers when the context ends: the
// waiter then leaves the queue at once and Lock returns an error matching
// the context's error (and ErrTimeout at a deadline, ErrCancelled
// otherwise). A Lock that got the lock at the moment its context ended
// returns the guard.
//
// # Losing a lock
//
// A Global lock can be lost while held (its etcd lease or ZooKeeper session
// expired, its Redis key was not refreshed in time). Guard.Context ends then,
// as etcd's Session.Done: run the critical section under it, pass
// Guard.Token to the resource where it can refuse stale writes, and treat
// Release's ErrLost as "the critical section may have overlapped".
//
// # Re-entry
//
// Goroutines are not OS threads, so this package turns the C library's
// per-thread re-entry check off: a goroutine that asks again for a lock it
// holds waits for itself until its context ends, as with sync.Mutex.
package locks

/*
#include <stdlib.h>
#include "locks.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Version is the version of the C header this package was built against.
const Version = C.LOCKS_VERSION

// LibraryVersion is the version of the linked library; it equals Version
// unless the header and the library come from different builds.
func LibraryVersion() string { return C.GoString(C.locks_version()) }

// PollInterval used to bound how long a Lock call waited before it checked a
// cancellable context again. Waits are now cancelled through the C library
// at once, in one piece, so it is not read.
//
// Deprecated: it has no effect; kept so that code setting it still builds.
var PollInterval = 200 * time.Millisecond

// Scope says how far a lock reaches.
type Scope int

// The scopes, with the C library's numbers.
const (
	ScopeProcess Scope = C.LOCKS_SCOPE_PROCESS // threads of one process
	ScopeNode    Scope = C.LOCKS_SCOPE_NODE    // every process on one host
	ScopeGlobal  Scope = C.LOCKS_SCOPE_GLOBAL  // every host of a cluster
)

func (s Scope) String() string {
	switch s {
	case ScopeProcess:
		return "process"
	case ScopeNode:
		return "node"
	case ScopeGlobal:
		return "global"
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}

// State says whether a held lock is still safely held.
type State int

// The states, with the C library's numbers.
const (
	StateHeld     State = C.LOCKS_LOCK_STATE_HELD     // held
	StateAtRisk   State = C.LOCKS_LOCK_STATE_AT_RISK  // connection interrupted: may be lost soon
	StateLost     State = C.LOCKS_LOCK_STATE_LOST     // lost: another holder may have it
	StateReleased State = C.LOCKS_LOCK_STATE_RELEASED // released
)

// Status is the C library's status code, one per Rust ErrorKind plus the
// failures of the C boundary.
type Status int

// The statuses, with their pinned numbers.
const (
	StatusOK               Status = C.LOCKS_STATUS_OK
	StatusInvalidTemplate  Status = C.LOCKS_STATUS_INVALID_TEMPLATE
	StatusMissingParameter Status = C.LOCKS_STATUS_MISSING_PARAMETER
	StatusUnknownParameter Status = C.LOCKS_STATUS_UNKNOWN_PARAMETER
	StatusInvalidName      Status = C.LOCKS_STATUS_INVALID_NAME
	StatusUnknownLock      Status = C.LOCKS_STATUS_UNKNOWN_LOCK
	StatusInvalidCatalog   Status = C.LOCKS_STATUS_INVALID_CATALOG
	StatusInvalidConfig    Status = C.LOCKS_STATUS_INVALID_CONFIG
	StatusUnsupported      Status = C.LOCKS_STATUS_UNSUPPORTED
	StatusWouldBlock       Status = C.LOCKS_STATUS_WOULD_BLOCK
	StatusTimeout          Status = C.LOCKS_STATUS_TIMEOUT
	StatusWouldDeadlock    Status = C.LOCKS_STATUS_WOULD_DEADLOCK
	StatusLost             Status = C.LOCKS_STATUS_LOST
	StatusUnavailable      Status = C.LOCKS_STATUS_UNAVAILABLE
	StatusPermissionDenied Status = C.LOCKS_STATUS_PERMISSION_DENIED
	StatusIO               Status = C.LOCKS_STATUS_IO
	StatusInternal         Status = C.LOCKS_STATUS_INTERNAL
	StatusNullArgument     Status = C.LOCKS_STATUS_NULL_ARGUMENT
	StatusInvalidUTF8      Status = C.LOCKS_STATUS_INVALID_UTF8
	StatusPanic            Status = C.LOCKS_STATUS_PANIC
	StatusAlreadyReleased  Status = C.LOCKS_STATUS_ALREADY_RELEASED
	StatusInvalidArgument  Status = C.LOCKS_STATUS_INVALID_ARGUMENT
	StatusCancelled        Status = C.LOCKS_STATUS_CANCELLED
)

// String is the status's short name ("would_block").
func (s Status) String() string { return C.GoString(C.locks_status_name(C.int(s))) }

// Error is a failure reported by the library: its status and message.
//
// Compare with the sentinels: errors.Is(err, locks.ErrTimeout). A Lock that
// ends because its context ended also matches the context's error: at its
// deadline ErrTimeout and context.DeadlineExceeded, when cancelled
// ErrCancelled and context.Canceled.
type Error struct {
	Status  Status
	Message string
	cause   error
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "locks: " + e.Status.String()
	}
	return "locks: " + e.Status.String() + ": " + e.Message
}

// Is reports whether target is an *Error with the same status and no
// message (one of the sentinels).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Status == e.Status
}

// Unwrap returns the context error that ended a Lock, if any.
func (e *Error) Unwrap() error { return e.cause }

// Sentinels for errors.Is.
var (
	ErrWouldBlock       = &Error{Status: StatusWouldBlock}
	ErrTimeout          = &Error{Status: StatusTimeout}
	ErrWouldDeadlock    = &Error{Status: StatusWouldDeadlock}
	ErrLost             = &Error{Status: StatusLost}
	ErrUnavailable      = &Error{Status: StatusUnavailable}
	ErrUnknownLock      = &Error{Status: StatusUnknownLock}
	ErrMissingParameter = &Error{Status: StatusMissingParameter}
	ErrUnknownParameter = &Error{Status: StatusUnknownParameter}
	ErrInvalidName      = &Error{Status: StatusInvalidName}
	ErrInvalidConfig    = &Error{Status: StatusInvalidConfig}
	ErrAlreadyReleased  = &Error{Status: StatusAlreadyReleased}
	ErrCancelled        = &Error{Status: StatusCancelled}
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("locks: client is closed")

// ErrReleased is matched by the error of a Guard's Context ended by Release
// (errors.Is(ctx.Err(), locks.ErrReleased)).
var ErrReleased = errors.New("locks: lock released")

// takeError copies a C error into Go and frees it.
func takeError(status C.locks_status, cerr *C.locks_error) *Error {
	e := &Error{Status: Status(status)}
	if cerr != nil {
		e.Message = C.GoString(C.locks_error_message(cerr))
		C.locks_error_free(cerr)
	}
	return e
}

// Entry is one declared lock of the catalog.
type Entry struct {
	ID              string   // "infinidat"
	Driver          string   // "Infinidat driver"
	Template        string   // "infinidat-{management_address}-lock"
	Scope           Scope    // ScopeGlobal
	CriticalSection string   // what the lock protects
	Parameters      []string // the keys Lock needs, in order of first use
}

// Client takes locks from one catalog on the configured backends. It is safe
// for concurrent use; Close waits for Lock calls in progress.
type Client struct {
	mu       sync.RWMutex
	c        *C.locks_client
	catalog  []Entry
	warnings []string

	// The cancellation handles of the acquires in flight, which Close
	// triggers so that it does not wait for them (they return ErrClosed).
	waitsMu sync.Mutex
	waits   map[*C.locks_cancel]struct{}
	closing bool
}

// Open opens a client from a TOML configuration file (the same format as
// the Rust and C APIs: prefix, catalog, [backends]).
func Open(cfgPath string) (*Client, error) {
	path := C.CString(cfgPath)
	defer C.free(unsafe.Pointer(path))
	return open(func(out **C.locks_client, errOut **C.locks_error) C.locks_status {
		return C.locks_client_open_file(path, out, errOut)
	})
}

// OpenString opens a client from TOML text; a relative catalog path is
// relative to the current directory.
func OpenString(toml string) (*Client, error) {
	text := C.CString(toml)
	defer C.free(unsafe.Pointer(text))
	return open(func(out **C.locks_client, errOut **C.locks_error) C.locks_status {
		return C.locks_client_open_string(text, out, errOut)
	})
}

// OpenDefault opens a client on the embedded defaults: the built-in catalog,
// Process locks in memory, Node and Global locks as lock files in a per-user
// directory (Global locks then exclude only this host; see Warnings).
func OpenDefault() (*Client, error) {
	return open(func(out **C.locks_client, errOut **C.locks_error) C.locks_status {
		return C.locks_client_open_default(out, errOut)
	})
}

func open(call func(**C.locks_client, **C.locks_error) C.locks_status) (*Client, error) {
	var c *C.locks_client
	var cerr *C.locks_error
	if status := call(&c, &cerr); status != C.LOCKS_STATUS_OK {
		return nil, takeError(status, cerr)
	}
	if status := C.locks_client_set_reentry_check(c, false, &cerr); status != C.LOCKS_STATUS_OK {
		C.locks_client_free(c)
		return nil, takeError(status, cerr)
	}
	client := &Client{c: c}
	for i := C.size_t(0); i < C.locks_client_catalog_len(c); i++ {
		client.catalog = append(client.catalog, readEntry(C.locks_client_catalog_entry(c, i)))
	}
	for i := C.size_t(0); i < C.locks_client_warnings_len(c); i++ {
		client.warnings = append(client.warnings, C.GoString(C.locks_client_warning(c, i)))
	}
	runtime.SetFinalizer(client, (*Client).Close)
	return client, nil
}

func readEntry(e *C.locks_catalog_entry) Entry {
	entry := Entry{
		ID:              C.GoString(C.locks_catalog_entry_id(e)),
		Driver:          C.GoString(C.locks_catalog_entry_driver(e)),
		Template:        C.GoString(C.locks_catalog_entry_template(e)),
		Scope:           Scope(C.locks_catalog_entry_scope(e)),
		CriticalSection: C.GoString(C.locks_catalog_entry_critical_section(e)),
		Parameters:      []string{},
	}
	for j := C.size_t(0); j < C.locks_catalog_entry_parameter_count(e); j++ {
		entry.Parameters = append(entry.Parameters, C.GoString(C.locks_catalog_entry_parameter(e, j)))
	}
	return entry
}

// Close frees the client. Waits in flight end at once with ErrClosed (Close
// does not wait for their locks), and later calls return ErrClosed. Guards it
// handed out stay valid until released. Closing twice does nothing.
func (c *Client) Close() error {
	// End the waits in flight first: they hold the read lock until they return.
	c.waitsMu.Lock()
	c.closing = true
	for cancel := range c.waits {
		C.locks_cancel_trigger(cancel, nil)
	}
	c.waitsMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c != nil {
		C.locks_client_free(c.c)
		c.c = nil
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// Catalog returns the declared locks, in catalog order.
func (c *Client) Catalog() []Entry {
	out := make([]Entry, len(c.catalog))
	copy(out, c.catalog)
	return out
}

// Entry returns the declared lock with this id, or an error matching ErrUnknownLock.
func (c *Client) Entry(id string) (Entry, error) {
	for _, e := range c.catalog {
		if e.ID == id {
			return e, nil
		}
	}
	known := make([]string, 0, len(c.catalog))
	for _, e := range c.catalog {
		known = append(known, e.ID)
	}
	return Entry{}, &Error{
		Status:  StatusUnknownLock,
		Message: fmt.Sprintf("no lock `%s` in the catalog; known ids: %v", id, known),
	}
}

// Warnings returns the configuration's warnings, for the caller to show.
func (c *Client) Warnings() []string { return append([]string(nil), c.warnings...) }

// Lock acquires catalog lock id, its name rendered from params, waiting as
// long as ctx allows (see the package documentation). The caller must call
// Release on the guard.
func (c *Client) Lock(ctx context.Context, id string, params map[string]string) (*Guard, error) {
	return c.lockWith(ctx, id, params, false)
}

// TryLock takes catalog lock id, its name rendered from params, only if it
// is free now, as etcd's Mutex.TryLock does: an error matching ErrWouldBlock
// when somebody holds it. The caller must call Release on the guard.
func (c *Client) TryLock(id string, params map[string]string) (*Guard, error) {
	return c.lockWith(context.Background(), id, params, true)
}

func (c *Client) lockWith(ctx context.Context, id string, params map[string]string, once bool) (*Guard, error) {
	if err := refuseNul("lock id", id); err != nil {
		return nil, err
	}
	for k, v := range params {
		if err := refuseNul("parameter name", k); err != nil {
			return nil, err
		}
		if err := refuseNul(fmt.Sprintf("parameter %q", k), v); err != nil {
			return nil, err
		}
	}
	cid := C.CString(id)
	defer C.free(unsafe.Pointer(cid))
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	n := len(names)
	// Arrays of C pointers (C memory), so they may be passed to C.
	keys := make([]*C.char, n+1)
	values := make([]*C.char, n+1)
	for i, k := range names {
		keys[i] = C.CString(k)
		values[i] = C.CString(params[k])
	}
	defer func() {
		for i := 0; i < n; i++ {
			C.free(unsafe.Pointer(keys[i]))
			C.free(unsafe.Pointer(values[i]))
		}
	}()
	return c.acquire(ctx, id, once, func(client *C.locks_client, timeoutMs C.int64_t, cancel *C.locks_cancel, out **C.locks_guard, errOut **C.locks_error) C.locks_status {
		return C.locks_client_lock_cancellable(client, cid, &keys[0], &values[0], C.size_t(n), timeoutMs, cancel, out, errOut)
	})
}

// LockName acquires a raw lock name (no catalog entry; the configured prefix
// is put before it) in scope, waiting as long as ctx allows.
func (c *Client) LockName(ctx context.Context, scope Scope, name string) (*Guard, error) {
	return c.lockNameWith(ctx, scope, name, false)
}

// TryLockName takes a raw lock name in scope only if it is free now: an
// error matching ErrWouldBlock when somebody holds it.
func (c *Client) TryLockName(scope Scope, name string) (*Guard, error) {
	return c.lockNameWith(context.Background(), scope, name, true)
}

func (c *Client) lockNameWith(ctx context.Context, scope Scope, name string, once bool) (*Guard, error) {
	if err := refuseNul("lock name", name); err != nil {
		return nil, err
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return c.acquire(ctx, name, once, func(client *C.locks_client, timeoutMs C.int64_t, cancel *C.locks_cancel, out **C.locks_guard, errOut **C.locks_error) C.locks_status {
		return C.locks_client_lock_name_cancellable(client, C.int(scope), cname, timeoutMs, cancel, out, errOut)
	})
}

type acquireFunc func(*C.locks_client, C.int64_t, *C.locks_cancel, **C.locks_guard, **C.locks_error) C.locks_status

// refuseNul returns an error matching ErrInvalidName when s holds a NUL
// byte: C strings end there, so the text after it would be dropped and two
// different names would take one lock.
func refuseNul(what, s string) *Error {
	at := strings.IndexByte(s, 0)
	if at < 0 {
		return nil
	}
	return &Error{
		Status:  StatusInvalidName,
		Message: fmt.Sprintf("%s %q holds a NUL byte at offset %d; C strings end there, so it would name another lock: remove it", what, s, at),
	}
}

func (c *Client) acquire(ctx context.Context, what string, once bool, call acquireFunc) (*Guard, error) {
	if err := ctx.Err(); err != nil {
		// Ended before anything was tried: the same errors as a wait that
		// ends so (matching ErrTimeout at a deadline, ErrCancelled
		// otherwise, and the context's error).
		status := StatusCancelled
		if errors.Is(err, context.DeadlineExceeded) {
			status = StatusTimeout
		}
		return nil, &Error{
			Status:  status,
			Message: fmt.Sprintf("gave up on lock `%s` before trying: %v", what, err),
			cause:   err,
		}
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.c == nil {
		return nil, ErrClosed
	}
	timeoutMs := timeoutOf(ctx)
	if once {
		timeoutMs = 0
	}
	// Every wait gets a cancellation handle: the context's end triggers it
	// (a cancellation, not a deadline: see below), and so does Close.
	var cancel *C.locks_cancel
	{
		var cerr *C.locks_error
		if status := C.locks_cancel_new(&cancel, &cerr); status != C.LOCKS_STATUS_OK {
			return nil, takeError(status, cerr)
		}
	}
	c.waitsMu.Lock()
	if c.closing {
		c.waitsMu.Unlock()
		C.locks_cancel_free(cancel)
		return nil, ErrClosed
	}
	if c.waits == nil {
		c.waits = make(map[*C.locks_cancel]struct{})
	}
	c.waits[cancel] = struct{}{}
	c.waitsMu.Unlock()
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			// A deadline ends the wait through the C call's own
			// timeout, set to the same instant (rounded up to the
			// millisecond): one error, naming the lock and its
			// backend, whichever clock gets there first. Only a
			// cancellation triggers the handle.
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				C.locks_cancel_trigger(cancel, nil)
			}
		case <-stop:
		}
	}()
	// Freed only once the goroutine has returned and Close can no longer
	// reach it: either may be triggering the handle right now.
	defer func() {
		close(stop)
		<-stopped
		c.waitsMu.Lock()
		delete(c.waits, cancel)
		c.waitsMu.Unlock()
		C.locks_cancel_free(cancel)
	}()
	var g *C.locks_guard
	var cerr *C.locks_error
	status := call(c.c, C.int64_t(timeoutMs), cancel, &g, &cerr)
	if status == C.LOCKS_STATUS_OK {
		// Even if the context ended meanwhile: the lock is held, as with
		// a sync.Mutex that was handed over.
		return newGuard(g), nil
	}
	err := takeError(status, cerr)
	if err.Status == StatusCancelled && ctx.Err() == nil {
		c.waitsMu.Lock()
		closing := c.closing
		c.waitsMu.Unlock()
		if closing {
			return nil, ErrClosed
		}
	}
	switch err.Status {
	case StatusCancelled, StatusTimeout, StatusWouldBlock:
		if once {
			return nil, err
		}
	default:
		return nil, err
	}
	ctxErr := ctx.Err()
	if ctxErr == nil {
		if err.Status == StatusCancelled {
			// Only the context triggers the handle.
			return nil, err
		}
		if timeoutMs < 0 {
			return nil, err
		}
		// The C call's timeout is the context's deadline; the library's
		// clock may get there a moment before ctx.Err() reports it.
		ctxErr = context.DeadlineExceeded
	}
	err.cause = ctxErr
	if err.Status == StatusCancelled {
		// The handle is this package's own: say what ended the wait. A
		// deadline that got there before the C call's own timer is the
		// timeout it would have been.
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			err.Status = StatusTimeout
		}
		err.Message = fmt.Sprintf("gave up waiting for lock `%s`: %v", what, ctxErr)
	}
	return nil, err
}

// timeoutOf returns the C call's timeout for ctx: the time to its deadline,
// rounded up so that the call does not end just before it; 0 (try once) if
// the deadline has passed; -1 (no timeout) without a deadline.
func timeoutOf(ctx context.Context) int64 {
	deadline, ok := ctx.Deadline()
	if !ok {
		return -1
	}
	left := time.Until(deadline)
	if left <= 0 {
		return 0
	}
	return int64((left + time.Millisecond - 1) / time.Millisecond)
}

// Guard is a held lock. Release it exactly once; a guard that is garbage
// collected unreleased keeps its lock until the process exits, and
// LeakReporter says so.
type Guard struct {
	mu    sync.Mutex
	g     *C.locks_guard
	name  string
	scope Scope
	token uint64

	// The context of Context, made by its first call.
	ctxOnce sync.Once
	ctx     *guardContext
	// Closed when the goroutine that waits in C for the lock's loss has
	// returned; nil until Context starts it. Release waits for it before
	// freeing the C guard.
	following chan struct{}
}

func newGuard(g *C.locks_guard) *Guard {
	guard := &Guard{
		g:     g,
		name:  C.GoString(C.locks_guard_name(g)),
		scope: Scope(C.locks_guard_scope(g)),
		token: uint64(C.locks_guard_token(g)),
	}
	runtime.SetFinalizer(guard, (*Guard).leaked)
	return guard
}

// LeakReporter is called with the lock's name when a Guard is garbage
// collected without Release. The lock then stays held until the process
// exits: releasing it from the finalizer could let another holder in while
// the caller, which may no longer reference the guard, is still inside the
// critical section. The default writes a warning to stderr.
var LeakReporter = func(name string) {
	fmt.Fprintf(os.Stderr, "locks: a Guard of lock `%s` was garbage collected without Release; "+
		"the lock stays held until the process exits (call Release, e.g. defer guard.Release())\n", name)
}

// leaked is the finalizer: it reports the leak and keeps the lock.
func (g *Guard) leaked() {
	LeakReporter(g.name)
}

// Name is the full lock name ("infinidat-10.0.0.1-lock").
func (g *Guard) Name() string { return g.name }

// Scope is the scope the lock was taken in.
func (g *Guard) Scope() Scope { return g.scope }

// Token is the fencing token of this holding: it grows with every new
// holder, so a resource that remembers the highest token it saw can refuse
// late writes from a holder whose lock was lost.
func (g *Guard) Token() uint64 { return g.token }

// State is the current state of the lock.
func (g *Guard) State() State {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.g == nil {
		return StateReleased
	}
	return State(C.locks_guard_state(g.g))
}

// Lost reports whether the lock was lost while held: the critical section is
// no longer protected.
func (g *Guard) Lost() bool { return g.State() == StateLost }

// Context returns a context that ends when the lock is lost or released,
// for the critical section to run under, as etcd's Session.Done:
//
//	ctx := guard.Context()
//	err := device.Write(ctx, data) // stops when the lock is lost
//
// Its Err then matches ErrLost (the lock was lost while held: another holder
// may be inside) or ErrReleased, and context.Canceled either way. A lock that
// cannot be lost (memory, lock files) ends its context only on Release. The
// first call starts a goroutine that waits inside the C library (one OS
// thread) until the lock is lost or released.
func (g *Guard) Context() context.Context {
	g.ctxOnce.Do(func() {
		g.ctx = &guardContext{done: make(chan struct{})}
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.g == nil {
			g.ctx.end(errReleased(g.name))
			return
		}
		g.following = make(chan struct{})
		// The goroutine holds the C guard, not g, so that a Guard dropped
		// unreleased is still collected and reported by LeakReporter.
		go followLoss(g.g, g.name, g.ctx, g.following)
	})
	return g.ctx
}

// followLoss waits in the C library until the lock is lost or released and
// ends the guard's context with the reason.
func followLoss(cg *C.locks_guard, name string, ctx *guardContext, done chan struct{}) {
	defer close(done)
	seen := C.locks_lock_state(C.LOCKS_LOCK_STATE_HELD)
	for {
		seen = C.locks_guard_wait_state(cg, C.int(seen), -1)
		switch seen {
		case C.LOCKS_LOCK_STATE_LOST:
			ctx.end(&Error{
				Status: StatusLost,
				Message: fmt.Sprintf("lock `%s` was lost while held (lease or session expired): "+
					"another holder may be in the critical section", name),
				cause: context.Canceled,
			})
			return
		case C.LOCKS_LOCK_STATE_RELEASED:
			ctx.end(errReleased(name))
			return
		}
	}
}

// guardContext is the context of Guard.Context: no deadline, no values,
// done when the lock is lost or released. (context.WithCancelCause would do,
// but it needs Go 1.20 and the package builds with Debian's 1.19.)
type guardContext struct {
	done chan struct{}
	once sync.Once
	mu   sync.Mutex
	err  error
}

func (c *guardContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *guardContext) Done() <-chan struct{}       { return c.done }
func (c *guardContext) Value(any) any               { return nil }

func (c *guardContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *guardContext) String() string { return "locks.Guard.Context" }

// end ends the context with err; later calls do nothing.
func (c *guardContext) end(err error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	})
}

// releasedError ends a Guard's Context on Release: it matches ErrReleased
// and context.Canceled.
type releasedError struct{ name string }

func errReleased(name string) error { return releasedError{name} }

func (e releasedError) Error() string {
	return fmt.Sprintf("locks: lock `%s` released", e.name)
}
func (e releasedError) Is(target error) bool { return target == ErrReleased }
func (e releasedError) Unwrap() error        { return context.Canceled }

// Release releases the lock and frees the guard, and ends its Context. An
// error matching ErrLost means the critical section was not protected to
// the end; releasing again returns an error matching ErrAlreadyReleased.
func (g *Guard) Release() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.g == nil {
		return &Error{
			Status:  StatusAlreadyReleased,
			Message: fmt.Sprintf("lock `%s` was already released by this guard", g.name),
		}
	}
	var cerr *C.locks_error
	status := C.locks_guard_release(g.g, &cerr)
	if g.following != nil {
		// The release woke the waiting goroutine; the C guard is freed
		// only once it has left the library.
		<-g.following
	}
	C.locks_guard_free(g.g)
	g.g = nil
	if g.ctx != nil {
		g.ctx.end(errReleased(g.name))
	}
	runtime.SetFinalizer(g, nil)
	if status != C.LOCKS_STATUS_OK {
		return takeError(status, cerr)
	}
	return nil
}
