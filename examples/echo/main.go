// Command echo is a lambdadb handler that answers its request unchanged.
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o echo.wasm ./examples/echo
package main

import "lambdadb/sdk/fn"

func init() {
	fn.Handle(func(c *fn.Ctx, req []byte) ([]byte, error) { return req, nil })
}

func main() {}
