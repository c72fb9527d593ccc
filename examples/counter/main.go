// Command counter is a lambdadb handler that increments the counter stored
// under the key it is invoked with (POST /v1/functions/counter/invoke?key=K)
// — or, without a key, under the key named by the request body — and
// answers the new count. The increment is a compare-and-put loop, so
// concurrent invocations never lose a count.
package main

import (
	"errors"
	"strconv"

	"lambdadb/sdk/fn"
)

func init() {
	fn.Handle(func(c *fn.Ctx, req []byte) ([]byte, error) {
		key := c.Key()
		if key == "" {
			key = string(req)
		}
		if key == "" {
			return nil, errors.New("invoke with ?key=K or the key as the body")
		}
		for {
			v, version, found, err := c.GetVersion(key)
			if err != nil {
				return nil, err
			}
			n := 0
			if found {
				if n, err = strconv.Atoi(string(v)); err != nil {
					return nil, errors.New("counter: " + key + " does not hold a number")
				}
			}
			next := []byte(strconv.Itoa(n + 1))
			ok, err := c.CompareAndPut(key, next, version)
			if err != nil {
				return nil, err
			}
			if ok {
				return next, nil
			}
		}
	})
}

func main() {}
