module example.invalid/locks/crates/locks-ffi/go

go 1.19
