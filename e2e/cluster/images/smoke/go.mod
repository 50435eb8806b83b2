module example.local/starling-e2e-smoke

go 1.26
