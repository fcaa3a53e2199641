"""API tokens and customers in the admin. A token is shown once, in the message after it is made
(a token's add page, a new customer, or the customers' action), and never again."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from api.customers import (
    FIRST_CREDENTIAL_NAME,
    CustomerExists,
    CustomerRejected,
    check_new_customer,
    create_customer,
    customers,
)
from api.models import ApiToken, Customer
from api.tokens import InvalidTokenName, check_token_name, create_token, revoke_token

# Each token issued by the action is one message to copy: a few at a time.
MAX_TOKENS_PER_ACTION = 20


def show_token_once(modeladmin: admin.ModelAdmin, request, user, token: str) -> None:
    modeladmin.message_user(
        request,
        f"API token for {user}: {token}  (copy it now: it is not stored and cannot be shown again)",
        messages.WARNING,
    )


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name"]

    def clean_name(self) -> str:
        try:
            return check_token_name(self.cleaned_data["name"])
        except InvalidTokenName as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = ["name", "user", "prefix", "created", "last_used", "revoked"]
    list_filter = ["revoked"]
    search_fields = ["name", "user__username", "prefix"]
    raw_id_fields = ["user"]
    actions = ["revoke_action"]

    def get_readonly_fields(self, request, obj=None):
        return ["user", "name", "prefix", "created", "last_used", "revoked"] if obj else []

    def save_model(self, request, obj: ApiToken, form, change: bool) -> None:
        if change:
            return
        row, token = create_token(obj.user, obj.name)
        obj.pk = row.pk
        obj.refresh_from_db()
        show_token_once(self, request, row.user, token)

    def has_change_permission(self, request, obj=None) -> bool:
        # A token is never edited: it is revoked and another one created.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Revoke (the token stops working at once)")
    def revoke_action(self, request, queryset) -> None:
        revoked = sum(revoke_token(row) for row in queryset)
        self.message_user(request, f"{revoked} token(s) revoked.", messages.SUCCESS)


class CustomerCreationForm(forms.ModelForm):
    """A new customer: a name, maybe an e-mail address, and what the first token is for. No
    password: the API token is how a customer signs in."""

    token_name = forms.CharField(
        max_length=100,
        initial=FIRST_CREDENTIAL_NAME,
        help_text="What their first API token is for, such as 'laptop CLI'.",
    )

    class Meta:
        model = Customer
        fields = ["username", "email"]
        help_texts = {"username": "ASCII letters, digits and @.+-_ (150 at most)."}

    def clean_token_name(self) -> str:
        try:
            return check_token_name(self.cleaned_data["token_name"])
        except InvalidTokenName as exc:
            raise forms.ValidationError(str(exc)) from None

    def validate_unique(self) -> None:
        # clean() has compared the name with every user's, case aside, which is stricter.
        pass

    def clean(self) -> dict:
        data = super().clean()
        if "username" in data and "email" in data:
            try:
                check_new_customer(data["username"], data["email"])
            except CustomerExists as exc:
                self.add_error("username", f"{exc}: issue them another token with the action on Customers")
            except CustomerRejected as exc:
                self.add_error(exc.field, str(exc))
        return data


class CustomerChangeForm(forms.ModelForm):
    class Meta:
        model = Customer
        fields = ["email", "is_active"]
        help_texts = {"is_active": "Unticked, every API token of theirs stops working at once."}


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["username", "email", "is_active", "app_count", "active_tokens", "date_joined"]
    list_filter = ["is_active"]
    search_fields = ["username", "email"]
    ordering = ["username"]
    actions = ["issue_token_action"]

    def get_queryset(self, request):
        return customers()

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = CustomerChangeForm if obj else CustomerCreationForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["username", "email", "token_name"]
        return ["username", "email", "is_active", "app_count", "active_tokens", "date_joined", "last_login"]

    def get_readonly_fields(self, request, obj=None):
        return ["username", "app_count", "active_tokens", "date_joined", "last_login"] if obj else []

    @admin.display(description="apps", ordering="app_count")
    def app_count(self, obj: Customer) -> int:
        return obj.app_count

    @admin.display(description="active API tokens", ordering="active_tokens")
    def active_tokens(self, obj: Customer) -> int:
        return obj.active_tokens

    def save_model(self, request, obj: Customer, form, change: bool) -> None:
        if change:
            obj.save(update_fields=["email", "is_active"])
            return
        data = form.cleaned_data
        customer, token = create_customer(data["username"], data["email"], token_name=data["token_name"])
        obj.pk = customer.pk
        obj.refresh_from_db()
        self.message_user(request, f"Customer {customer} created, not staff and with no password.")
        show_token_once(self, request, customer, token)

    @admin.action(description="Issue a new API token (shown once)")
    def issue_token_action(self, request, queryset) -> None:
        chosen = list(queryset.order_by("pk")[: MAX_TOKENS_PER_ACTION + 1])
        if len(chosen) > MAX_TOKENS_PER_ACTION:
            self.message_user(
                request,
                f"Choose at most {MAX_TOKENS_PER_ACTION} customers: each token is a message to copy.",
                messages.ERROR,
            )
            return
        for customer in chosen:
            if not customer.is_active:
                self.message_user(
                    request, f"No token for {customer}: the customer is deactivated.", messages.ERROR
                )
                continue
            _, token = create_token(customer, "issued in the admin")
            show_token_once(self, request, customer, token)
