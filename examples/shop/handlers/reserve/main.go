// Command reserve is the shop's stock handler, invoked next to a
// product's stock key (POST /v1/functions/shop-reserve/invoke?key=stock/{p}):
// it takes the request's qty units from the stock with a compare-and-set
// loop — concurrent buyers run in different sandboxes, and only one of two
// racing writes of the same version wins — and never below zero. A
// negative qty gives units back (an order that could not be stored).
package main

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"lambdadb/examples/shop/model"
	"lambdadb/sdk/fn"
)

func init() {
	fn.Handle(func(c *fn.Ctx, req []byte) ([]byte, error) {
		var r model.Reserve
		if err := json.Unmarshal(req, &r); err != nil {
			return nil, errors.New("reserve: want {\"qty\":N}")
		}
		key := c.Key()
		if key == "" {
			return nil, errors.New("reserve: invoke with ?key=stock/{product}")
		}
		attempt := 0
		for {
			v, version, found, err := c.GetVersion(key)
			if err != nil {
				return nil, err
			}
			if !found {
				return json.Marshal(model.Reserved{Unknown: true})
			}
			left, err := strconv.Atoi(string(v))
			if err != nil {
				return nil, errors.New("reserve: " + key + " does not hold a number")
			}
			if r.Qty > left {
				return json.Marshal(model.Reserved{Left: left})
			}
			left -= r.Qty
			ok, err := c.CompareAndPut(key, []byte(strconv.Itoa(left)), version)
			if err != nil {
				return nil, err
			}
			if ok {
				return json.Marshal(model.Reserved{OK: true, Left: left})
			}
			// Another buyer took units meanwhile: read again, after a
			// short random pause so that many buyers do not retry in
			// lockstep.
			attempt++
			fn.Sleep(jitter(min(attempt, 10)))
		}
	})
}

// jitter returns a random pause of up to n ms (crypto/rand: the host's
// randomness differs per call, unlike a generator seeded in init).
func jitter(n int) time.Duration {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return time.Duration(int(binary.LittleEndian.Uint16(b[:]))%(n*1000)) * time.Microsecond
}

func main() {}
