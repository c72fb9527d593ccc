package lambda_test

import (
	"testing"

	"lambdadb/lambda"
)

func TestValidateStoredName(t *testing.T) {
	for _, ok := range []string{"f", "shop:f", "blog-1:a.b_c"} {
		if err := lambda.ValidateStoredName(ok); err != nil {
			t.Errorf("ValidateStoredName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "shop:", "default:f", "Shop:f", "shop:a:b", ":f", "shop:-f"} {
		if err := lambda.ValidateStoredName(bad); err == nil {
			t.Errorf("ValidateStoredName(%q) accepted", bad)
		}
	}
	// A user name never holds ':'.
	if lambda.ValidateName("shop:f") == nil {
		t.Error("ValidateName accepted a qualified name")
	}
}
