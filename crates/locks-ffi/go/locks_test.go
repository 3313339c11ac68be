package locks_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	locks "example.invalid/locks/crates/locks-ffi/go"
)

// open returns a client on a private lock directory.
func open(t *testing.T) *locks.Client {
	t.Helper()
	dir := t.TempDir()
	config := filepath.Join(dir, "locks.toml")
	text := fmt.Sprintf("[backends]\nnode = \"file://%[1]s\"\nglobal = \"file://%[1]s\"\n", dir)
	if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := locks.Open(config)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

var infinidat = map[string]string{"management_address": "10.0.0.1"}

func TestVersion(t *testing.T) {
	if locks.LibraryVersion() != locks.Version {
		t.Fatalf("library %s, header %s", locks.LibraryVersion(), locks.Version)
	}
}

func TestCatalog(t *testing.T) {
	client := open(t)
	if len(client.Catalog()) < 10 {
		t.Fatalf("catalog has %d entries", len(client.Catalog()))
	}
	e, err := client.Entry("infinidat")
	if err != nil {
		t.Fatal(err)
	}
	if e.Scope != locks.ScopeGlobal || e.Template != "infinidat-{management_address}-lock" ||
		len(e.Parameters) != 1 || e.Parameters[0] != "management_address" || e.Driver != "Infinidat driver" {
		t.Fatalf("infinidat entry: %+v", e)
	}
	if lio, _ := client.Entry("lio"); lio.Scope != locks.ScopeNode || len(lio.Parameters) != 0 {
		t.Fatalf("lio entry: %+v", lio)
	}
	if _, err := client.Entry("no-such-lock"); !errors.Is(err, locks.ErrUnknownLock) {
		t.Fatalf("Entry(no-such-lock): %v", err)
	}
}

func TestLockAndRelease(t *testing.T) {
	client := open(t)
	g, err := client.Lock(context.Background(), "infinidat", infinidat)
	if err != nil {
		t.Fatal(err)
	}
	if g.Name() != "infinidat-10.0.0.1-lock" || g.Scope() != locks.ScopeGlobal || g.Token() == 0 {
		t.Fatalf("guard %q %v %d", g.Name(), g.Scope(), g.Token())
	}
	if g.State() != locks.StateHeld || g.Lost() {
		t.Fatalf("state %v", g.State())
	}
	if err := g.Release(); err != nil {
		t.Fatal(err)
	}
	if g.State() != locks.StateReleased {
		t.Fatalf("state after release %v", g.State())
	}
	err = g.Release()
	var lerr *locks.Error
	if !errors.Is(err, locks.ErrAlreadyReleased) || !errors.As(err, &lerr) || lerr.Message == "" {
		t.Fatalf("second Release: %v", err)
	}
	// Free again: try once succeeds.
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	if _, err := client.Lock(ctx, "infinidat", infinidat); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expired context: %v", err)
	}
	g, err = client.LockName(context.Background(), locks.ScopeProcess, "raw-name")
	if err != nil || g.Name() != "raw-name" || g.Scope() != locks.ScopeProcess {
		t.Fatalf("LockName: %v", err)
	}
	g.Release()
}

func TestErrorsCarryStatusAndMessage(t *testing.T) {
	client := open(t)
	ctx := context.Background()
	cases := []struct {
		id     string
		params map[string]string
		want   *locks.Error
	}{
		{"no-such-lock", nil, locks.ErrUnknownLock},
		{"infinidat", nil, locks.ErrMissingParameter},
		{"infinidat", map[string]string{"management_address": "a", "pool": "b"}, locks.ErrUnknownParameter},
		{"infinidat", map[string]string{"management_address": "a\nb"}, locks.ErrInvalidName},
		{"infinidat", map[string]string{"management_address": "\xff"}, &locks.Error{Status: locks.StatusInvalidUTF8}},
	}
	for _, c := range cases {
		_, err := client.Lock(ctx, c.id, c.params)
		var lerr *locks.Error
		if !errors.Is(err, c.want) || !errors.As(err, &lerr) || lerr.Message == "" {
			t.Errorf("Lock(%q, %v): got %v, want status %v", c.id, c.params, err, c.want.Status)
		}
	}
	if _, err := client.LockName(ctx, locks.Scope(9), "x"); !errors.Is(err, &locks.Error{Status: locks.StatusInvalidArgument}) {
		t.Errorf("LockName(scope 9): %v", err)
	}
	if _, err := locks.OpenString("prefx = 1"); !errors.Is(err, locks.ErrInvalidConfig) {
		t.Errorf("OpenString: %v", err)
	}
	if _, err := locks.Open("/nonexistent/locks.toml"); !errors.Is(err, &locks.Error{Status: locks.StatusIO}) {
		t.Errorf("Open: %v", err)
	}
}

func TestDeadlineIsTheTimeout(t *testing.T) {
	client := open(t)
	held, err := client.Lock(context.Background(), "lio", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	for _, wait := range []time.Duration{50 * time.Millisecond, 300 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		start := time.Now()
		_, err = client.Lock(ctx, "lio", nil)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, locks.ErrTimeout) {
			t.Fatalf("wait %v: %v", wait, err)
		}
		if took := time.Since(start); took < wait || took > wait+2*time.Second {
			t.Fatalf("wait %v took %v", wait, took)
		}
	}
	// Whichever clock gets to the deadline first, the error is the library's
	// timeout, naming the rendered lock (not only its id) and its backend.
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		_, err = client.Lock(ctx, "lio", nil)
		cancel()
		if !errors.Is(err, locks.ErrTimeout) || !strings.Contains(err.Error(), "lioadm") ||
			!strings.Contains(err.Error(), "file") {
			t.Fatalf("deadline %d: %v", i, err)
		}
	}
}

func TestCancelWithoutDeadline(t *testing.T) {
	client := open(t)
	held, err := client.Lock(context.Background(), "lio", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	start := time.Now()
	_, err = client.Lock(ctx, "lio", nil)
	took := time.Since(start)
	var lerr *locks.Error
	if !errors.Is(err, context.Canceled) || !errors.Is(err, locks.ErrCancelled) ||
		!errors.As(err, &lerr) || !strings.Contains(lerr.Message, "lio") {
		t.Fatalf("cancelled Lock: %v", err)
	}
	// Promptly: no waiting in slices any more.
	if took < 500*time.Millisecond || took > 500*time.Millisecond+time.Second {
		t.Fatalf("cancellation noticed after %v", took)
	}
	// The cancelled waiter left nothing behind.
	if err := held.Release(); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	g, err := client.Lock(ctx, "lio", nil)
	if err != nil {
		t.Fatalf("Lock after a cancelled waiter: %v", err)
	}
	g.Release()
}

// A context with a deadline that is cancelled before it: the error is the
// cancellation's, not a timeout.
func TestCancelBeforeDeadline(t *testing.T) {
	client := open(t)
	held, err := client.LockName(context.Background(), locks.ScopeProcess, "busy")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err = client.LockName(ctx, locks.ScopeProcess, "busy")
	if !errors.Is(err, context.Canceled) || !errors.Is(err, locks.ErrCancelled) || errors.Is(err, locks.ErrTimeout) {
		t.Fatalf("cancelled Lock: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("cancellation noticed after %v", took)
	}
}

// Waiters whose contexts can be cancelled (with or without a deadline) wait
// in one piece, so they keep their place in the queue: on the memory
// backend, which is first come, first served, they get the lock in the
// order they asked for it, even when the wait lasts many times what used to
// be the polling interval (200 ms).
func TestCancellableWaitersKeepTheirPlace(t *testing.T) {
	client := open(t)
	held, err := client.LockName(context.Background(), locks.ScopeProcess, "queue")
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 5
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	errs := make(chan error, waiters)
	for i := 0; i < waiters; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			if i%2 == 1 {
				ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
			}
			defer cancel()
			g, err := client.LockName(ctx, locks.ScopeProcess, "queue")
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			if err := g.Release(); err != nil {
				errs <- err
			}
		}(i)
		// Queued one after the other.
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(700 * time.Millisecond)
	if err := held.Release(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, got := range order {
		if got != i {
			t.Fatalf("waiters got the lock in the order %v, not the order they asked", order)
		}
	}
	if len(order) != waiters {
		t.Fatalf("order %v", order)
	}
}

// A context cancelled at the moment the lock is handed over: Lock returns
// either the guard (the C call got the lock first) or the context's error,
// and never leaves the lock held by nobody.
func TestCancelRacingTheHandover(t *testing.T) {
	client := open(t)
	got, cancelled := 0, 0
	for i := 0; i < 200; i++ {
		held, err := client.LockName(context.Background(), locks.ScopeProcess, "race")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		result := make(chan error, 1)
		go func() {
			g, err := client.LockName(ctx, locks.ScopeProcess, "race")
			if err == nil {
				err = g.Release()
				got++
			} else if errors.Is(err, context.Canceled) {
				err = nil
				cancelled++
			}
			result <- err
		}()
		// The waiter queues; then the release and the cancellation land
		// together, one or the other a little ahead.
		time.Sleep(time.Millisecond)
		jitter := time.Duration(i%7) * 50 * time.Microsecond
		cancelLate := i%2 == 0
		released := make(chan error, 1)
		go func() {
			if cancelLate {
				time.Sleep(jitter)
			}
			cancel()
		}()
		go func() {
			if !cancelLate {
				time.Sleep(jitter)
			}
			released <- held.Release()
		}()
		if err := <-released; err != nil {
			t.Fatal(err)
		}
		if err := <-result; err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		g, err := client.LockName(ctx, locks.ScopeProcess, "race")
		stop()
		if err != nil {
			t.Fatalf("iteration %d: the lock is stuck: %v", i, err)
		}
		g.Release()
	}
	t.Logf("%d handed over, %d cancelled", got, cancelled)
}

// Goroutines share OS threads: many of them on one client and one lock must
// wait for each other, never see a false WouldDeadlock, and never overlap.
func TestGoroutinesNeverOverlap(t *testing.T) {
	client := open(t)
	var inside, entered int32
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				g, err := client.Lock(ctx, "infinidat", infinidat)
				cancel()
				if err != nil {
					errs <- err
					return
				}
				if atomic.AddInt32(&inside, 1) != 1 {
					errs <- errors.New("two holders at once")
				}
				atomic.AddInt32(&entered, 1)
				time.Sleep(100 * time.Microsecond)
				atomic.AddInt32(&inside, -1)
				if err := g.Release(); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if entered != 160 {
		t.Fatalf("entered %d times", entered)
	}
}

func TestClosedClient(t *testing.T) {
	client := open(t)
	g, err := client.Lock(context.Background(), "lio", nil)
	if err != nil {
		t.Fatal(err)
	}
	client.Close()
	client.Close()
	if _, err := client.Lock(context.Background(), "lio", nil); !errors.Is(err, locks.ErrClosed) {
		t.Fatalf("Lock after Close: %v", err)
	}
	// A guard outlives its client.
	if err := g.Release(); err != nil {
		t.Fatal(err)
	}
}

func TestNulBytesAreRefused(t *testing.T) {
	client := open(t)
	ctx := context.Background()
	if _, err := client.LockName(ctx, locks.ScopeNode, "volume-1\x00-attach"); !errors.Is(err, locks.ErrInvalidName) {
		t.Fatalf("a name with a NUL: %v", err)
	}
	if _, err := client.Lock(ctx, "infinidat", map[string]string{"management_address": "10.0.0.1\x00x"}); !errors.Is(err, locks.ErrInvalidName) {
		t.Fatalf("a parameter with a NUL: %v", err)
	}
	if _, err := client.TryLock("lio\x00", nil); !errors.Is(err, locks.ErrInvalidName) {
		t.Fatalf("an id with a NUL: %v", err)
	}
	// Nothing took the name the C string would have been cut to.
	g, err := client.TryLockName(locks.ScopeNode, "volume-1")
	if err != nil {
		t.Fatalf("volume-1 is free: %v", err)
	}
	g.Release()
}

func TestTryLockAndContextsEndedBeforeTrying(t *testing.T) {
	client := open(t)
	held, err := client.TryLock("lio", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	if _, err := client.TryLock("lio", nil); !errors.Is(err, locks.ErrWouldBlock) {
		t.Fatalf("TryLock of a held lock: %v", err)
	}
	if _, err := client.TryLockName(locks.ScopeNode, "lioadm"); !errors.Is(err, locks.ErrWouldBlock) {
		t.Fatalf("TryLockName of a held lock: %v", err)
	}
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, err = client.Lock(expired, "lio", nil)
	if !errors.Is(err, locks.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("an expired deadline: %v", err)
	}
	cancelled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	_, err = client.Lock(cancelled, "lio", nil)
	if !errors.Is(err, locks.ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled context: %v", err)
	}
}

func TestAnUnreleasedGuardKeepsItsLock(t *testing.T) {
	client := open(t)
	leaks := make(chan string, 1)
	report := locks.LeakReporter
	locks.LeakReporter = func(name string) { leaks <- name }
	defer func() { locks.LeakReporter = report }()
	func() {
		if _, err := client.Lock(context.Background(), "lio", nil); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for reported := false; !reported; {
		runtime.GC()
		select {
		case name := <-leaks:
			if name != "lioadm" {
				t.Fatalf("leak reported for %q", name)
			}
			reported = true
		case <-time.After(20 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("the guard's finalizer never ran")
			}
		}
	}
	if _, err := client.TryLock("lio", nil); !errors.Is(err, locks.ErrWouldBlock) {
		t.Fatalf("the collected guard let its lock go: %v", err)
	}
}

// Close ends the waits in flight with ErrClosed instead of waiting for them.
func TestCloseEndsWaits(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "locks.toml")
	text := fmt.Sprintf("[backends]\nnode = \"file://%[1]s\"\nglobal = \"file://%[1]s\"\n", dir)
	if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	holder, err := locks.Open(config)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	held, err := holder.Lock(context.Background(), "lio", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	waiter, err := locks.Open(config)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, err := waiter.Lock(context.Background(), "lio", nil)
			done <- err
		}()
	}
	time.Sleep(200 * time.Millisecond)
	closed := make(chan struct{})
	go func() {
		waiter.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for the waiters")
	}
	for i := 0; i < 2; i++ {
		if err := <-done; !errors.Is(err, locks.ErrClosed) {
			t.Fatalf("a wait ended by Close: %v", err)
		}
	}
	if _, err := waiter.Lock(context.Background(), "lio", nil); !errors.Is(err, locks.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestContextEndsOnRelease(t *testing.T) {
	client := open(t)
	g, err := client.Lock(context.Background(), "infinidat", infinidat)
	if err != nil {
		t.Fatal(err)
	}
	ctx := g.Context()
	if ctx != g.Context() {
		t.Fatal("Context returned a new context on its second call")
	}
	select {
	case <-ctx.Done():
		t.Fatalf("the context ended while the lock was held: %v", ctx.Err())
	case <-time.After(100 * time.Millisecond):
	}
	if err := g.Release(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	default:
		t.Fatal("Release returned before the context ended")
	}
	if err := ctx.Err(); !errors.Is(err, locks.ErrReleased) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Err %v", err)
	}
	if err := g.Context().Err(); !errors.Is(err, locks.ErrReleased) {
		t.Fatalf("a context asked for after Release: Err %v", err)
	}
	// A context derived from it ends with it.
	derived, cancel := context.WithTimeout(g.Context(), time.Minute)
	defer cancel()
	if err := derived.Err(); !errors.Is(err, locks.ErrReleased) {
		t.Fatalf("derived context: Err %v", err)
	}
}

// TestContextEndsOnLoss is run by crates/locks-ffi/tests/go.rs, which
// starts a fault proxy in front of etcd and sets LOCKS_TEST_GO_ETCD_PROXY
// (the proxy) and LOCKS_TEST_GO_PARTITION (an address whose every
// connection makes the proxy drop all traffic, so the lease expires).
func TestContextEndsOnLoss(t *testing.T) {
	proxy, partition := os.Getenv("LOCKS_TEST_GO_ETCD_PROXY"), os.Getenv("LOCKS_TEST_GO_PARTITION")
	if proxy == "" || partition == "" {
		t.Skip("run by crates/locks-ffi/tests/go.rs (go_guard_context_ends_on_loss), which starts the fault proxy")
	}
	prefix := fmt.Sprintf("%%2Fgo-loss-%d-%d%%2F", os.Getpid(), time.Now().UnixNano())
	text := fmt.Sprintf("[backends]\nnode = \"file://%s\"\nglobal = \"etcd://%s?ttl=2s&connect_timeout=500ms&prefix=%s\"\n",
		t.TempDir(), proxy, prefix)
	client, err := locks.OpenString(text)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	g, err := client.LockName(context.Background(), locks.ScopeGlobal, "go-loss")
	if err != nil {
		t.Fatal(err)
	}
	ctx := g.Context()

	// The reference: the first time the guard's state reads Lost.
	polled := make(chan time.Time, 1)
	go func() {
		for limit := time.Now().Add(20 * time.Second); time.Now().Before(limit); time.Sleep(time.Millisecond) {
			if g.State() == locks.StateLost {
				polled <- time.Now()
				return
			}
		}
		close(polled)
	}()
	time.Sleep(300 * time.Millisecond)
	if ctx.Err() != nil {
		t.Fatalf("the context ended while the lock was held: %v", ctx.Err())
	}
	conn, err := net.Dial("tcp", partition)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	cut := time.Now()

	var woke time.Time
	select {
	case <-ctx.Done():
		woke = time.Now()
	case <-time.After(20 * time.Second):
		t.Fatal("the context did not end within 20 s of the partition")
	}
	if err := ctx.Err(); !errors.Is(err, locks.ErrLost) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Err %v, want one matching ErrLost and context.Canceled", err)
	}
	at, ok := <-polled
	if !ok {
		t.Fatal("the guard never reported Lost")
	}
	if at.Sub(cut) >= 2*time.Second {
		t.Fatalf("Lost %v after the partition, not before the 2 s lease could expire", at.Sub(cut))
	}
	if late := woke.Sub(at); late > 250*time.Millisecond {
		t.Fatalf("the context ended %v after the guard reported Lost", late)
	}
	if err := g.Release(); !errors.Is(err, locks.ErrLost) {
		t.Fatalf("Release: %v, want ErrLost", err)
	}
}
