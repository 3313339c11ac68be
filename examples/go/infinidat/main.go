// Command infinidat is the Go driver example: an Infinidat-style Global lock
// around a (simulated) connection call, bounded by a context deadline.
//
//	infinidat -config locks.toml -address 10.0.0.1 [-timeout 30s]
//
// Exits 75 when the lock cannot be had before the deadline, 1 on other errors.
//
// Build (the package links the static library of crates/locks-ffi):
//
//	cargo build -p locks-ffi
//	CGO_LDFLAGS="$PWD/target/debug/liblocks_ffi.a" go run ./infinidat ...   (from examples/go)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	locks "example.invalid/locks/crates/locks-ffi/go"
)

// initializeConnection is the call the lock protects. A real driver would
// pass the fencing token to the array so that it can refuse late writes.
func initializeConnection(ctx context.Context, guard *locks.Guard, address string) error {
	fmt.Printf("infinidat: initialize_connection on %s with fencing token %d\n", address, guard.Token())
	select {
	case <-time.After(20 * time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	if guard.Lost() {
		return errors.New("lock lost during the call; not committing")
	}
	fmt.Println("infinidat: connection initialized")
	return nil
}

func run() int {
	config := flag.String("config", "", "the locks configuration file (TOML)")
	address := flag.String("address", "", "the array's management address")
	timeout := flag.Duration("timeout", 30*time.Second, "how long to wait for the lock")
	flag.Parse()
	if *config == "" || *address == "" {
		flag.Usage()
		return 2
	}

	client, err := locks.Open(*config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "infinidat:", err)
		return 1
	}
	defer client.Close()
	for _, w := range client.Warnings() {
		fmt.Fprintln(os.Stderr, "infinidat: warning:", w)
	}
	entry, err := client.Entry("infinidat")
	if err != nil {
		fmt.Fprintln(os.Stderr, "infinidat:", err)
		return 1
	}
	fmt.Printf("infinidat: template %s, scope %s, parameters %v\n", entry.Template, entry.Scope, entry.Parameters)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	guard, err := client.Lock(ctx, "infinidat", map[string]string{"management_address": *address})
	if errors.Is(err, locks.ErrTimeout) || errors.Is(err, locks.ErrWouldBlock) {
		fmt.Fprintln(os.Stderr, "infinidat:", err)
		return 75
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "infinidat:", err)
		return 1
	}
	fmt.Printf("infinidat: locked %s\n", guard.Name())

	code := 0
	if err := initializeConnection(ctx, guard, *address); err != nil {
		fmt.Fprintln(os.Stderr, "infinidat:", err)
		code = 1
	}
	if err := guard.Release(); err != nil {
		// errors.Is(err, locks.ErrLost): the call above was not protected to the end.
		fmt.Fprintln(os.Stderr, "infinidat: release:", err)
		return 1
	}
	fmt.Printf("infinidat: released %s\n", guard.Name())
	return code
}

func main() { os.Exit(run()) }
