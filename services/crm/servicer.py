"""The CRM's gRPC servicer: `hotline.v1.Crm`, where the IVR asks who is calling before it
routes the call."""

from __future__ import annotations

import grpc

from common.rpc import Context, callers
from crm.customers import find_by_phone
from crm.db import Database
from hotline.v1 import crm_pb2, crm_pb2_grpc


class CrmService(crm_pb2_grpc.CrmServicer):
    """LookupCustomer: `found=false` (not an error) for an unknown caller — most calls are."""

    #: who may call what (enforced by common.rpc): the IVR routes and greets by customer.
    CALLERS = callers("hotline.v1.Crm", {"LookupCustomer": {"ivr"}})

    def __init__(self, db: Database) -> None:
        self.db = db

    async def LookupCustomer(
        self, request: crm_pb2.LookupCustomerRequest, context: Context
    ) -> crm_pb2.Customer:
        if not request.phone:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "phone is required")
        async with self.db.sessions() as session:
            customer = await find_by_phone(session, request.phone)
        if customer is None:
            return crm_pb2.Customer(found=False)
        return crm_pb2.Customer(
            found=True,
            customer_id=str(customer.id),
            name=customer.name,
            phone=customer.phone,
            email=customer.email,
            vip_tier=customer.vip_tier,
            notes=customer.notes,
        )
