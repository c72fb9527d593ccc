// Command noexports is a wasip1 reactor that does not use the SDK.
package main

func main() {}
