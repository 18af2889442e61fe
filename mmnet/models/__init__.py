"""Networks: tapped timm backbones (`backbones`), MMNet's layers (`components`), one module per matcher family
(`mmnet`, `scot`, ...). Nothing here knows names, checkpoints or image files: see `mmnet.zoo` and
`mmnet.matching`."""
