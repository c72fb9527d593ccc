// Command leafprobe is a test scatter/gather function. Its Leaf sleeps for
// the milliseconds stored at cfg/leaf_sleep_ms (if any), fails when
// cfg/leaf_fail exists, then counts the records under the prefix and
// sums their lengths; its Combine adds the leaves' outputs, so "leaves"
// says how many leaves the result includes. Output: JSON
// {"leaves":L,"records":N,"bytes":B}.
package main

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"lambdadb/sdk/fn"
)

type out struct {
	Leaves  int `json:"leaves"`
	Records int `json:"records"`
	Bytes   int `json:"bytes"`
}

func init() {
	fn.Leaf(func(c *fn.Ctx, prefix string) ([]byte, error) {
		if v, ok, err := c.Get("cfg/leaf_sleep_ms"); err != nil {
			return nil, err
		} else if ok {
			n, _ := strconv.Atoi(string(v))
			fn.Sleep(time.Duration(n) * time.Millisecond)
		}
		if _, ok, err := c.Get("cfg/leaf_fail"); err != nil {
			return nil, err
		} else if ok {
			return nil, errors.New("leaf told to fail")
		}
		o := out{Leaves: 1}
		err := c.Scan(prefix, func(key string, value []byte) bool {
			o.Records++
			o.Bytes += len(key) + len(value)
			return true
		})
		if err != nil {
			return nil, err
		}
		return json.Marshal(o)
	})
	fn.Combine(func(parts [][]byte) ([]byte, error) {
		var total out
		for _, p := range parts {
			var o out
			if err := json.Unmarshal(p, &o); err != nil {
				return nil, err
			}
			total.Leaves += o.Leaves
			total.Records += o.Records
			total.Bytes += o.Bytes
		}
		return json.Marshal(total)
	})
}

func main() {}
