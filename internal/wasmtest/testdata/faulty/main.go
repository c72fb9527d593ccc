// Command faulty is a test handler that misbehaves on request.
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"lambdadb/sdk/fn"
)

//go:wasmimport lambdadb call
func rawCall(op uint32, ptr uint32, n uint32, out uint32, outCap uint32) uint32

var hoard [][]byte

func init() {
	// OnChanges records each change as log/<key> = "<version>:<value>"
	// appended to what is there (so a redelivery shows), and fails on a
	// value of "poison" unless the key cure/<key> exists (a dead letter's
	// replay can then succeed).
	fn.OnChanges(func(c *fn.Ctx, batch []fn.Change) error {
		for _, ch := range batch {
			if string(ch.Value) == "poison" {
				_, cured, err := c.Get("cure/" + ch.Key)
				if err != nil {
					return err
				}
				if !cured {
					return errors.New("poison change at " + ch.Key)
				}
			}
			k := "log/" + ch.Key
			old, _, err := c.Get(k)
			if err != nil {
				return err
			}
			entry := fmt.Sprintf("%d:%s;", ch.Version, ch.Value)
			if ch.Op == "delete" {
				entry = fmt.Sprintf("%d:<deleted>;", ch.Version)
			}
			if err := c.Put(k, append(old, entry...)); err != nil {
				return err
			}
		}
		return nil
	})
	// Combine answers the total size of its parts.
	fn.Combine(func(parts [][]byte) ([]byte, error) {
		n := 0
		for _, p := range parts {
			n += len(p)
		}
		return []byte(strconv.Itoa(n)), nil
	})
	fn.Handle(func(c *fn.Ctx, req []byte) ([]byte, error) {
		cmd, arg, _ := strings.Cut(string(req), " ")
		switch cmd {
		case "loop":
			for i := 0; ; i++ {
				_ = i
			}
		case "alloc":
			for {
				hoard = append(hoard, make([]byte, 1<<20))
			}
		case "alloc-mb":
			n, _ := strconv.Atoi(arg)
			b := make([]byte, n<<20)
			for i := range b {
				b[i] = 1
			}
			return []byte(fmt.Sprint(len(b) >> 20)), nil
		case "panic":
			panic("boom")
		case "error":
			return nil, errors.New("handler said no")
		case "exit":
			os.Exit(3)
		case "badptr":
			rawCall(1, 0xfffffff0, 64, 0, 0)
		case "sleep":
			ms, _ := strconv.Atoi(arg)
			fn.Sleep(time.Duration(ms) * time.Millisecond)
			return []byte("slept"), nil
		case "stdout":
			fmt.Println("to stdout")
			fmt.Fprintln(os.Stderr, "to stderr")
			c.Log("via Log %d", 42)
			return nil, nil
		case "get":
			v, ok, err := c.Get(arg)
			if err != nil {
				return nil, err
			}
			if !ok {
				return []byte("<absent>"), nil
			}
			return v, nil
		case "put":
			k, v, _ := strings.Cut(arg, "=")
			return nil, c.Put(k, []byte(v))
		case "scan":
			var keys []string
			err := c.Scan(arg, func(k string, v []byte) bool { keys = append(keys, k); return true })
			return []byte(strings.Join(keys, ",")), err
		case "env":
			_, err := os.ReadFile("/etc/passwd")
			return []byte(fmt.Sprintf("env=%d args=%d file=%v", len(os.Environ()), len(os.Args), err != nil)), nil
		case "spam":
			n, _ := strconv.Atoi(arg)
			fmt.Println(strings.Repeat("x", n))
			return nil, nil
		case "recurse":
			if arg == "big" {
				return []byte(fmt.Sprint(recurseBig(0))), nil
			}
			return []byte(fmt.Sprint(recurse(0))), nil
		case "park":
			n, _ := strconv.Atoi(arg)
			ready := make(chan struct{})
			go park(n, ready)
			<-ready
			return []byte("parked"), nil
		case "big":
			n, _ := strconv.Atoi(arg)
			return make([]byte, n), nil
		}
		return req, nil
	})
}

// recurse never returns: each frame holds a little stack, so the
// goroutine's stack grows until the runtime gives up.
func recurse(n int) int {
	var pad [16]int
	pad[n%16] = n
	return recurse(n+1) + pad[(n+1)%16]
}

// recurseBig is recurse with 8 KiB frames: it overflows in few frames.
func recurseBig(n int) int {
	var pad [1024]int
	pad[n%1024] = n
	return recurseBig(n+1) + pad[(n+1)%1024]
}

// park leaves a goroutine n frames deep waiting for ever (it lives as
// long as the sandbox): the crash report of a later fatal error walks
// its frames.
func park(n int, ready chan struct{}) int {
	var pad [16]int
	if n == 0 {
		close(ready)
		select {}
	}
	pad[n%16] = n
	return park(n-1, ready) + pad[(n+1)%16]
}

func main() {}
