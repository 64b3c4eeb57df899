from __future__ import annotations

import json
import math
from decimal import Decimal

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from operations import permissions, registry, selectors
from operations.api.throttling import LoginAttempts
from operations.exceptions import ServiceError
from operations.models import (
    LIVE_WORKER_STATUSES,
    RESUMABLE_STATUSES,
    Operation,
    OperationEvent,
    Worker,
    WorkerCredential,
    WorkerStatus,
)
from operations.pagination import ListPaginator
from operations.restarts import restart_summary
from operations.services.credentials import credential_create, credential_revoke
from operations.services.lifecycle import CancelOutcome, operation_cancel


def progress_bar(operation: Operation) -> str:
    percent = max(0.0, min(100.0, operation.progress_percent or 0.0))
    return format_html(
        '<div class="op-progress" title="{}">'
        '<div class="op-progress-bar op-status-{}" style="width: {}%"></div>'
        '<span class="op-progress-label">{}%</span></div>',
        operation.progress_message or operation.status,
        operation.status.lower(),
        f"{percent:.1f}",
        f"{percent:.0f}",
    )


def parameter_text(value: object) -> str:
    """A parameter's value in a line: text as it is, a flat object as name=value pairs, anything else as
    compact JSON; a number as written out (0.00002, never 2e-05)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    if isinstance(value, dict) and all(not isinstance(v, (dict, list)) for v in value.values()):
        return ", ".join(f"{name}={_json_scalar(v)}" for name, v in value.items()) or "-"
    return _json_scalar(value)


def _json_scalar(value: object) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return format(Decimal(repr(value)), "f")
    return json.dumps(value)


class ResumableFilter(admin.SimpleListFilter):
    title = "resumable"
    parameter_name = "resumable"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        condition = Q(status__in=RESUMABLE_STATUSES, checkpoint__isnull=False)
        if self.value() == "yes":
            return queryset.filter(condition)
        if self.value() == "no":
            return queryset.exclude(condition)
        return queryset


class WorkerFilter(admin.SimpleListFilter):
    """The live workers (idle, busy, stopping) when they are few, and the one chosen; not every worker ever
    registered (each process of a cluster registers one, and they grow with every restart), nor a fleet of
    hundreds: listed, they cost a page more than its rows. Any worker's operations are a link away
    (`?worker__worker_id__exact=<its id>`)."""

    title = "worker"
    parameter_name = "worker__worker_id__exact"
    most = 20

    def lookups(self, request, model_admin):
        live = Worker.objects.filter(status__in=[*LIVE_WORKER_STATUSES, WorkerStatus.STOPPING])
        listed = list(live.order_by("worker_id").values_list("worker_id", flat=True)[: self.most + 1])
        if len(listed) > self.most:
            listed = []
        if self.value() and self.value() not in listed:
            listed.append(self.value())
        return [(worker_id, worker_id) for worker_id in listed]

    def queryset(self, request, queryset):
        return queryset.filter(worker_id=self.value()) if self.value() else queryset


class OperationChangeList(ChangeList):
    def get_ordering(self, request: HttpRequest, queryset: QuerySet[Operation]) -> list:
        # The column sorted alone, without the admin's default ordering after it (ModelAdmin.get_queryset's):
        # "status, -created_at" would need an index of its own.
        return super().get_ordering(request, queryset.order_by())

    def _get_deterministic_ordering(self, ordering: list) -> list:
        """Ties broken by creation time, then by id, in the direction of the column sorted (Django's own adds the
        id descending whatever that direction): one index ((status, created_at, operation_id) for a sort by
        status) then answers a page either way, read in order and left at the page's last row, where ties broken
        the other way would make PostgreSQL sort every row the filters leave."""
        ordering = list(ordering)
        if not ordering or not all(isinstance(part, str) for part in ordering):
            return super()._get_deterministic_ordering(ordering)
        names = {part.lstrip("-") for part in ordering}
        if names & {"pk", "operation_id"}:
            return ordering  # the id: a total order already
        direction = "-" if ordering[0].startswith("-") else ""
        return [*ordering, *(direction + name for name in ("created_at", "operation_id") if name not in names)]


class OperationEventInline(admin.TabularInline):
    model = OperationEvent
    extra = 0
    can_delete = False
    fields = ["at", "from_status", "to_status", "reason", "actor", "principal"]
    readonly_fields = fields
    ordering = ["-at", "-id"]

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = [
        "operation",  # its type is in its id, and in the filters
        "status",
        "progress",
        "checkpoint_summary",
        "restarts_counter",
        "owner",
        "worker",
        "created_at",
        "last_heartbeat_at",
        "error",
    ]
    # The sorts offered, each answered by an index read in order (Operation.Meta.indexes). None on a column a
    # heartbeat writes (the progress, the last heartbeat): an index holding one would end heartbeats' in-place
    # updates. None on the owner (it would sort by the user's number, not the name shown) nor the worker (the
    # filter finds a worker's operations): an index each for a sort of little use.
    sortable_by = ["operation", "status", "created_at"]
    # Creation dates as a filter (today, the past 7 days, this month, this year: a range the index reads), not
    # a date hierarchy, whose years are a DISTINCT over every row the filters leave: a million rows read a page.
    list_filter = ["status", "operation_type", ResumableFilter, "is_backend_local", WorkerFilter,
                   ("created_at", admin.DateFieldListFilter)]
    search_fields = ["operation_id"]
    list_select_related = ["owner", "worker", "checkpoint"]
    ordering = ["-created_at"]
    show_full_result_count = False  # a filtered page counts its own rows only, not the whole table again
    list_per_page = 50  # as the API's page: drawing a row's eleven cells is most of a page's time
    paginator = ListPaginator  # exact up to 10,000 rows, the database's estimate past (operations/pagination.py)
    actions = ["cancel_operations"]  # resume and delete checkpoint: runtime/admin.py
    inlines = [OperationEventInline]
    readonly_fields = [
        "operation_id",
        "operation_type",
        "status",
        "previous_status",
        "version",
        "owner",
        "worker",
        "attempt",
        "is_backend_local",
        "parent",
        "progress",
        "checkpoint_summary",
        "progress_message",
        "progress_current",
        "progress_total",
        "progress_unit",
        "parameters",
        "error_message",
        "presumed_orphan",
        "created_at",
        "queued_at",
        "started_at",
        "completed_at",
        "last_heartbeat_at",
        "cancel_requested_at",
        "orphan_clock_from",
        "restarts_counter",
        "restart_decision",
        "max_restarts",
        "restarts",
        "end_cause",
        "restart_due_at",
        "restart_from",
        "stalls",
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "operation_id", "operation_type", "status", "progress", "progress_message",
                    "checkpoint_summary", "error_message",
                ]
            },
        ),
        ("Request", {"fields": ["parameters"]}),  # the result is above the fields (result_context)
        ("Execution", {"fields": ["owner", "worker", "attempt", "is_backend_local", "parent", "version", "previous_status"]}),
        ("Restart policy", {"fields": ["restarts_counter", "restart_decision", "end_cause", "restart_due_at",
                                       "restart_from", "stalls"]}),
        ("Progress", {"fields": ["progress_current", "progress_total", "progress_unit"], "classes": ["collapse"]}),
        (
            "Timeline",
            {
                "fields": [
                    "created_at",
                    "queued_at",
                    "started_at",
                    "last_heartbeat_at",
                    "cancel_requested_at",
                    "orphan_clock_from",
                    "presumed_orphan",
                    "completed_at",
                ]
            },
        ),
    ]

    class Media:
        css = {"all": ["operations/admin.css"]}

    def action_checkbox(self, operation: Operation) -> str:
        # The admin's own checkbox, written out: Django draws it through the forms' template engine, which for a
        # page of 50 rows took longer than all the other cells.
        return format_html('<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
                           ACTION_CHECKBOX_NAME, operation.pk, f"Select this object for an action - {operation}")

    @admin.display(description="restarts")
    def restarts_counter(self, operation: Operation) -> str:
        """`restarts/max_restarts`, and a mark when an automatic resume is planned."""
        summary = restart_summary(operation)
        if summary["state"] != "planned":
            return summary["counter"]
        return format_html('{} <span title="{}">⟳</span>', summary["counter"], summary["text"])

    @admin.display(description="automatic resume")
    def restart_decision(self, operation: Operation) -> str:
        return restart_summary(operation)["text"] or "-"

    @admin.display(description="operation", ordering="operation_id")
    def operation(self, operation: Operation) -> str:
        """Its id, breakable between its parts ("op_" / "training_" / "20261127_" / "054037_" / "a3865045", a
        type's own "_" kept): a narrow column wraps it instead of growing to its whole length."""
        parts = operation.pk.rsplit("_", 3)
        if len(parts) != 4 or not parts[0].startswith("op_"):
            return operation.pk
        prefix, day, moment, suffix = parts
        return format_html('<span class="op-id" title="{}">op_<wbr>{}_<wbr>{}_<wbr>{}_<wbr>{}</span>', operation.pk,
                           prefix.removeprefix("op_"), day, moment, suffix)

    @admin.display(description="error")
    def error(self, operation: Operation) -> str:
        """The start of a run's error; all of it when the pointer rests on it, and on the operation's page."""
        if not operation.error_message:
            return "-"
        return format_html('<span class="op-error" title="{}">{}</span>', operation.error_message,
                           Truncator(operation.error_message).chars(90))

    @admin.display(description="parameters")
    def parameters(self, operation: Operation) -> str:
        params = operation.params if isinstance(operation.params, dict) else {"(not an object)": operation.params}
        if not params:
            return "-"
        rows = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>",
                                ((name, parameter_text(value)) for name, value in params.items()))
        return format_html('<table class="op-params">{}</table>', rows)

    @admin.display(description="Progress")
    def progress(self, operation: Operation) -> str:
        return progress_bar(operation)

    @admin.display(description="Checkpoint")
    def checkpoint_summary(self, operation: Operation) -> str:
        checkpoint = getattr(operation, "checkpoint", None)  # the checkpoint store's reverse relation
        if checkpoint is None:
            return "-"
        summary = checkpoint.summary()
        where = checkpoint.position_text
        size = (summary["state_size_bytes"] + summary["artifacts_size_bytes"]) / 1_048_576
        text = f"{summary['checkpoint_type']}{' · ' + where if where else ''} · {size:.1f} MB"
        return format_html("{}{}", text, " · resumable" if operation.resumable else "")

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return OperationChangeList

    def changelist_view(self, request: HttpRequest, extra_context=None):
        # Ten columns beside the filters: with the navigation sidebar too, a 1400 px window would clip them (the
        # breadcrumbs and the admin's home lead everywhere it does).
        return super().changelist_view(request, {"is_nav_sidebar_enabled": False, **(extra_context or {})})

    def get_queryset(self, request: HttpRequest) -> QuerySet[Operation]:
        # Never the result: a backtest's is megabytes (its trades). The list shows none of it, and the page
        # loads only the keys it shows (result_context).
        return super().get_queryset(request).visible_to(request.user).defer("result")  # the API's rule

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/result/raw/", view(self.raw_result_view), name="operations_operation_raw_result"),
            path("<path:object_id>/result/<slug:slug>/", view(self.result_page_view),
                 name="operations_operation_result_page"),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        operation = self.get_object(request, unquote(object_id))
        if operation is not None and self.has_view_permission(request, operation):
            extra_context = {**(extra_context or {}), **self.result_context(operation)}
        return super().change_view(request, object_id, form_url, extra_context)

    def result_context(self, operation: Operation) -> dict:
        """What the page shows of the result, above the fields: its figures (the same as the API's and the
        command line's), its type's charts and panel, and links to the pages of its larger parts and to the
        raw result. Only the keys of the result these read are loaded."""
        result = selectors.result_parts(operation.pk, registry.detail_reads(operation.operation_type))
        context = {
            "figures": registry.result_summary(operation.operation_type, result, operation.params),
            "has_result": result is not None,
            **registry.detail_panel(operation, result or {}),
        }
        if result is not None:
            context["raw_result_url"] = reverse("admin:operations_operation_raw_result", args=[quote(operation.pk)])
            context["result_links"] = [
                (page.title, reverse("admin:operations_operation_result_page", args=[quote(operation.pk), page.slug]))
                for page in registry.result_pages(operation.operation_type)
            ]
        return context

    def visible_operation(self, request: HttpRequest, object_id: str) -> Operation:
        """The operation of a page of its result: the admin's view permission first (403, as the admin's own
        pages answer), then the same rule as its change page (another user's operation is missing: 404)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        operation = self.get_object(request, unquote(object_id))
        if operation is None:
            raise Http404(f"No operation {object_id[:60]!r} that you may see.")
        return operation

    def raw_result_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The result as the database holds it, JSON, never parsed here (it may be megabytes)."""
        operation = self.visible_operation(request, object_id)
        text = selectors.raw_result(operation.pk)
        if text is None:
            raise Http404(f"Operation {operation.pk} has no result yet.")
        return HttpResponse(text, content_type="application/json",
                            headers={"Content-Disposition": f'inline; filename="{operation.pk}-result.json"'})

    def result_page_view(self, request: HttpRequest, object_id: str, slug: str) -> HttpResponse:
        """A page of a part of the result (a backtest's trades), from the query string it names; a query it
        cannot answer is a 400 that says why."""
        operation = self.visible_operation(request, object_id)
        page = registry.result_page(operation.operation_type, slug)
        if page is None:
            raise Http404(f"A {operation.operation_type} operation has no result page {slug!r}.")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": operation,
            "title": f"{page.title} of {operation.pk}",
            "page_title": page.title,
            "raw_result_url": reverse("admin:operations_operation_raw_result", args=[quote(operation.pk)]),
        }
        status = 200
        try:
            context.update(page.context(operation, request.GET))
        except registry.ResultPageError as exc:
            context["error"], status = str(exc), 400
        request.current_app = self.admin_site.name
        return TemplateResponse(request, page.template, context, status=status)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # operations are created through the API and the command line

    # The actions' permissions: the admin offers an action only to a user who holds it.
    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(permissions.CANCEL)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # state changes only through transitions (actions)

    @admin.action(description="Cancel selected operations", permissions=["cancel"])
    def cancel_operations(self, request: HttpRequest, queryset: QuerySet[Operation]) -> None:
        counts = {outcome: 0 for outcome in CancelOutcome}
        refused = []
        for operation_id in queryset.values_list("pk", flat=True):
            try:
                counts[operation_cancel(operation_id=operation_id, actor=f"admin:{request.user.get_username()}")] += 1
            except ServiceError as exc:
                refused.append(exc.detail)
        if counts[CancelOutcome.CANCELLED]:
            self.message_user(request, f"{counts[CancelOutcome.CANCELLED]} cancelled.", messages.SUCCESS)
        requested = counts[CancelOutcome.REQUESTED] + counts[CancelOutcome.ALREADY_REQUESTED]
        if requested:
            self.message_user(
                request, f"Cancel requested for {requested} running; their workers will checkpoint and stop.",
                messages.SUCCESS,
            )
        for detail in refused:
            self.message_user(request, detail, messages.WARNING)


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ["worker_id", "worker_type", "status", "current_operation", "host", "pid", "last_seen_at"]
    list_filter = ["status", "worker_type", "host"]
    search_fields = ["worker_id", "host"]
    list_select_related = ["current_operation"]
    readonly_fields = [
        "worker_id", "worker_type", "host", "pid", "capabilities", "status", "current_operation",
        "registered_at", "last_seen_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(WorkerCredential)
class WorkerCredentialAdmin(admin.ModelAdmin):
    """Made here or with `manage.py workercredentials create`; the key is shown once, never again."""

    list_display = ["prefix", "host", "description", "created_at", "created_by", "last_used_at", "revoked_at"]
    list_filter = ["host"]
    search_fields = ["prefix", "host", "description"]
    fields = ["host", "description", "prefix", "created_at", "created_by", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "created_by", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [*self.readonly_fields, "host", "description"] if obj else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: WorkerCredential, form, change: bool) -> None:
        if change:
            return  # nothing of a credential changes but its revocation (the action)
        credential, key = credential_create(host=obj.host, description=obj.description,
                                            actor=f"admin:{request.user.get_username()}")
        obj.pk = credential.pk
        obj.refresh_from_db()
        self.message_user(
            request,
            f"The key of {credential.prefix} (host {credential.host}), shown this once: {key}",
            messages.WARNING,
        )

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("operations.change_workercredential")

    @admin.action(description="Revoke selected credentials", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[WorkerCredential]) -> None:
        revoked = [credential_revoke(prefix=prefix).prefix for prefix in queryset.values_list("prefix", flat=True)]
        self.message_user(request, f"Revoked {len(revoked)}: {', '.join(revoked)}.", messages.SUCCESS)


def login(request: HttpRequest, **kwargs):
    """The admin's login page, with LoginAttempts per client address: a form posted too often is refused (429)
    before any password is checked."""
    throttle = LoginAttempts()
    if request.method == "POST" and not throttle.allow_request(request, None):
        wait = throttle.wait()
        return HttpResponse(
            f"Too many login attempts from this address: try again in {int(wait or 60)} seconds.",
            status=429, content_type="text/plain; charset=utf-8", headers={"Retry-After": str(int(wait or 60))},
        )
    return admin.site.login(request, **kwargs)
