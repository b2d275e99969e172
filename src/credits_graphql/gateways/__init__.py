"""Payment gateway adapters for the `service.payments.PaymentGateway` port."""
