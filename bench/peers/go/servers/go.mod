module weft/peers/servers

go 1.19
