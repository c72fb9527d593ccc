// Command mutator is a handler that changes its own state on every call:
// a counter in a global variable, a 4 MiB slice it overwrites and a map it
// grows. Each call answers the state it found ("counter checksum entries")
// before changing it, so a test can tell whether two sandboxes ever see
// each other's writes, and whether each starts from the state its init
// left. A request "sleep" holds the sandbox for 300 ms first.
package main

import (
	"fmt"
	"time"

	"lambdadb/sdk/fn"
)

var (
	counter int
	big     = make([]byte, 4<<20)
	seen    = map[int]int{}
)

func init() {
	for i := range big {
		big[i] = byte(i % 251)
	}
	seen[-1] = -1
	fn.Handle(func(c *fn.Ctx, req []byte) ([]byte, error) {
		if string(req) == "sleep" {
			fn.Sleep(300 * time.Millisecond)
		}
		sum := 0
		for _, b := range big {
			sum += int(b)
		}
		out := fmt.Sprintf("%d %d %d", counter, sum, len(seen))
		counter++
		for i := range big {
			big[i] = byte(counter)
		}
		seen[counter] = counter
		return []byte(out), nil
	})
}

func main() {}
