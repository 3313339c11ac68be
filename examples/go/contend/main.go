// Command contend is the Go contender of the cross-language test: it takes
// the Node lock `lio` N times and, while holding it, appends `enter WHO
// TOKEN` and then `exit WHO` to a shared log opened with O_APPEND.
//
//	contend CONFIG LOG WHO N
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	locks "example.invalid/locks/crates/locks-ffi/go"
)

func run() error {
	if len(os.Args) != 5 {
		return fmt.Errorf("usage: %s CONFIG LOG WHO N", os.Args[0])
	}
	config, logPath, who := os.Args[1], os.Args[2], os.Args[3]
	n, err := strconv.Atoi(os.Args[4])
	if err != nil {
		return err
	}
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	client, err := locks.Open(config)
	if err != nil {
		return err
	}
	defer client.Close()
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		guard, err := client.Lock(ctx, "lio", nil)
		cancel()
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(log, "enter %s %d\n", who, guard.Token()); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
		if _, err := fmt.Fprintf(log, "exit %s\n", who); err != nil {
			return err
		}
		if err := guard.Release(); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "contend:", err)
		os.Exit(1)
	}
}
