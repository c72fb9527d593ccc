// Command badinit is a handler whose init panics.
package main

import "lambdadb/sdk/fn"

func init() {
	fn.Handle(func(c *fn.Ctx, req []byte) ([]byte, error) { return req, nil })
	panic("init failed")
}

func main() {}
