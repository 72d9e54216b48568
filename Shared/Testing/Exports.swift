@_exported import CareMeshRPC
