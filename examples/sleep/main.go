// Command sleep is a lambdadb handler that sleeps for the number of
// milliseconds in its request body (default 200) and answers "slept N ms".
// The sleep waits in the host and uses no CPU.
package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"lambdadb/sdk/fn"
)

func init() {
	fn.Handle(func(c *fn.Ctx, req []byte) ([]byte, error) {
		ms := 200
		if s := strings.TrimSpace(string(req)); s != "" {
			var err error
			if ms, err = strconv.Atoi(s); err != nil || ms < 0 {
				return nil, fmt.Errorf("sleep: want a number of milliseconds, got %q", s)
			}
		}
		fn.Sleep(time.Duration(ms) * time.Millisecond)
		return []byte(fmt.Sprintf("slept %d ms", ms)), nil
	})
}

func main() {}
